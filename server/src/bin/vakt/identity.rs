//! `vakt device reenroll` and `vakt device retire`: the admin's say over a device's identity.

use super::{Cli, client, status};
use clap::Subcommand;
use vakt_proto::pb;
use vakt_server::api::device_state_name;

#[derive(Subcommand)]
pub enum IdentityCmd {
    /// Allow the next enrollment of this device's hardware (machine id and serial) within
    /// 24 hours to take the device over, e.g. for a reinstalled laptop (admin; audited; one
    /// use). Without it, an enrollment claiming the hardware of a device whose certificate is
    /// still valid becomes a new device marked as sharing the hardware.
    Reenroll {
        /// Device id or hostname.
        id: String,
    },
    /// Revoke the device's certificate: its agent's calls are refused from now on and the
    /// device becomes retired (admin; audited).
    Retire {
        /// Device id or hostname.
        id: String,
    },
}

pub async fn run(cli: &Cli, cmd: &IdentityCmd) -> anyhow::Result<()> {
    let mut c = client(cli).await?;
    match cmd {
        IdentityCmd::Reenroll { id } => {
            let d = c
                .reenroll_device(pb::ReenrollDeviceRequest { id: id.clone() })
                .await
                .map_err(status)?
                .into_inner();
            outln!(
                "{} ({}): the next enrollment of its hardware within 24 hours takes it over",
                d.id,
                d.hostname
            );
        }
        IdentityCmd::Retire { id } => {
            let d = c
                .retire_device(pb::RetireDeviceRequest { id: id.clone() })
                .await
                .map_err(status)?
                .into_inner();
            outln!(
                "{} ({}): certificate revoked, state {}",
                d.id,
                d.hostname,
                device_state_name(d.state)
            );
        }
    }
    Ok(())
}
