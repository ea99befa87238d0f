-- Schema 2: the change feed between replicas (ARCHITECTURE.md, "The change feed"). A write to
-- a tree whose records other replicas keep in memory (the open-command index, the policy in
-- force, console sessions of revoked tokens, held streams of retired devices) notifies
-- channel `vakt_changes` from inside the writing transaction, so PostgreSQL delivers it only
-- if, and when, that transaction commits. A trigger rather than a NOTIFY in the server's code:
-- no write path (a multi-tree transaction, an update, a batch) can forget it.
--
-- Payload: "<application_name of the writer> <tree> <key as hex>". Each replica's pool names
-- its connections uniquely, so a replica can tell (and skip) its own writes. Trees with a
-- write per check-in (devices, sections, audit) are not watched: nothing cached depends on
-- them, and a NOTIFY serialises commits.
CREATE FUNCTION vakt_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r vakt_kv;
BEGIN
    IF TG_OP = 'DELETE' THEN
        r := OLD;
    ELSE
        r := NEW;
    END IF;
    PERFORM pg_notify('vakt_changes',
        current_setting('application_name') || ' ' || r.tree || ' ' || encode(r.key, 'hex'));
    RETURN NULL;
END
$$;

CREATE TRIGGER vakt_kv_written AFTER INSERT OR UPDATE ON vakt_kv FOR EACH ROW
    WHEN (NEW.tree IN ('commands', 'policies', 'admin_tokens', 'revoked_certs'))
    EXECUTE FUNCTION vakt_notify_change();

CREATE TRIGGER vakt_kv_removed AFTER DELETE ON vakt_kv FOR EACH ROW
    WHEN (OLD.tree IN ('commands', 'policies', 'admin_tokens', 'revoked_certs'))
    EXECUTE FUNCTION vakt_notify_change();
