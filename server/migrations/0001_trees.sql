-- Schema 1: the store's trees (ARCHITECTURE.md, "store"), one row per key. Keys and values
-- are the bytes the store writes on sled too (protobuf or JSON records, binary keys), so one
-- contract covers both engines. bytea orders bytewise, as sled orders its keys.
CREATE TABLE vakt_kv (
    tree  text  NOT NULL,
    key   bytea NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (tree, key)
);
