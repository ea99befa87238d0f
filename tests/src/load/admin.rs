//! The admin API as the simulator uses it: a bearer-token client over the same TLS helper the
//! `vakt` command line uses.

use super::LoadError;
use super::sim::{Fleet, SimAgent};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use vakt_proto::pb;
use vakt_proto::pb::admin_service_client::AdminServiceClient;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        r.metadata_mut().insert("authorization", self.0.clone());
        Ok(r)
    }
}

pub type Admin = AdminServiceClient<InterceptedService<Channel, Bearer>>;

/// An admin client for `server`, trusting `ca_pem`, with `token`.
pub async fn client(server: &str, ca_pem: &str, token: &str) -> Result<Admin, LoadError> {
    let channel = vakt_agent::link::connect(server, ca_pem, None).await?;
    let header: MetadataValue<Ascii> = format!("Bearer {}", token.trim())
        .parse()
        .map_err(|_| LoadError::Other("the admin token is not valid header text".into()))?;
    // A fleet's device list is large: 10,000 devices are a few MiB.
    Ok(
        AdminServiceClient::with_interceptor(channel, Bearer(header))
            .max_decoding_message_size(256 << 20),
    )
}

/// An enrollment token good for `uses` enrollments.
pub async fn enroll_token(admin: &mut Admin, uses: u32) -> Result<String, LoadError> {
    Ok(admin
        .create_enroll_token(pb::CreateEnrollTokenRequest {
            uses,
            ttl_s: 24 * 3600,
            note: "vakt-loadgen".into(),
        })
        .await
        .map_err(LoadError::rpc("create enroll token"))?
        .into_inner()
        .token)
}

/// What the store lacks of what it acknowledged: reports whose sequence the store does not
/// hold, and command results the store does not show as done. The first `full_n` agents'
/// software sections are compared by hash too (see
/// [`Acknowledged::kept_by`](super::sim::Acknowledged::kept_by)).
pub async fn lost_acknowledged(
    admin: &mut Admin,
    agents: &[std::sync::Arc<SimAgent>],
    fleet: &Fleet,
    full_n: usize,
) -> Result<Vec<String>, LoadError> {
    let devices = admin
        .list_devices(pb::ListDevicesRequest {})
        .await
        .map_err(LoadError::rpc("list devices"))?
        .into_inner()
        .devices;
    let seqs: std::collections::HashMap<_, _> = devices
        .iter()
        .map(|d| (d.id.clone(), d.last_report_sequence))
        .collect();
    let mut lost = Vec::new();
    for (i, a) in agents.iter().enumerate() {
        let ack = a.acknowledged().await;
        let held_seq = seqs.get(&a.device_id).copied();
        if held_seq.is_none_or(|s| s < ack.sequence) {
            lost.push(format!(
                "{} acknowledged report {}, the store has {held_seq:?}; its latest reports: {:#?}",
                a.device_id,
                ack.sequence,
                a.history().await
            ));
            continue;
        }
        if i < full_n && ack.software.is_some() {
            let detail = admin
                .get_device(pb::GetDeviceRequest {
                    id: a.device_id.clone(),
                })
                .await
                .map_err(LoadError::rpc("get device"))?
                .into_inner();
            let held = detail
                .sections
                .iter()
                .find(|s| s.kind == pb::SectionKind::Software as i32)
                .map(|s| vakt_agent::link::hex(&s.hash));
            if !ack.kept_by(held_seq.unwrap_or(0), held.as_deref()) {
                lost.push(format!(
                    "{} acknowledged software {:?} with report {}, the store has {held:?} with report {held_seq:?}; its latest reports: {:#?}",
                    a.device_id,
                    ack.software,
                    ack.sequence,
                    a.history().await
                ));
            }
        }
    }
    let commands = admin
        .list_commands(pb::ListCommandsRequest::default())
        .await
        .map_err(LoadError::rpc("list commands"))?
        .into_inner()
        .commands;
    let done: std::collections::HashSet<_> = commands
        .iter()
        .filter(|c| c.state == pb::CommandState::Succeeded as i32)
        .map(|c| c.id.clone())
        .collect();
    let acked = fleet
        .acked_results
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    for id in acked {
        if !done.contains(&id) {
            lost.push(format!("the acknowledged result of {id}"));
        }
    }
    Ok(lost)
}
