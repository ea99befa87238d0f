//! `vakt people import|list`: the people register (who has which device, their managers, end
//! dates and leaves), replaced whole from a CSV file.

use super::{Cli, client, status};
use anyhow::Context;
use clap::Subcommand;
use serde_json::{Value, json};
use std::path::PathBuf;
use vakt_proto::pb;

#[derive(Subcommand)]
pub enum PeopleCmd {
    /// Replace the register from a CSV file (validated whole first; nothing applied on error).
    Import { file: PathBuf },
    /// The register.
    List {
        #[arg(long)]
        json: bool,
    },
}

/// `vakt people ...`.
pub async fn run(cli: &Cli, cmd: &PeopleCmd) -> anyhow::Result<()> {
    match cmd {
        PeopleCmd::Import { file } => {
            let csv = std::fs::read(file).with_context(|| format!("{}", file.display()))?;
            let r = client(cli)
                .await?
                .import_people(pb::ImportPeopleRequest {
                    csv,
                    file_name: file.display().to_string(),
                })
                .await
                .map_err(status)?
                .into_inner();
            outln!("{} people imported", r.imported);
        }
        PeopleCmd::List { json } => {
            let people = client(cli)
                .await?
                .list_people(pb::ListPeopleRequest {})
                .await
                .map_err(status)?
                .into_inner()
                .people;
            if *json {
                let rows: Vec<Value> = people
                    .iter()
                    .map(|p| json!({"email": p.email, "name": p.name, "manager_email": p.manager_email,
                                    "end_date": p.end_date, "leave_from": p.leave_from, "leave_to": p.leave_to}))
                    .collect();
                outln!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                for p in &people {
                    outln!("{:<32} {:<28} manager {}", p.email, p.name, p.manager_email);
                }
            }
        }
    }
    Ok(())
}
