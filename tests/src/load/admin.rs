//! The admin API as the simulator uses it: a bearer-token client over the same TLS helper the
//! `vakt` command line uses.

use super::LoadError;
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
    Ok(AdminServiceClient::with_interceptor(channel, Bearer(header))
        .max_decoding_message_size(256 << 20))
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
