//! `vakt trips add|list`: trips abroad (policy 8.4, 8.5), with who approved taking the laptop.

use super::{Cli, client, status};
use clap::Subcommand;
use serde_json::{Value, json};
use vakt_proto::pb;

#[derive(Subcommand)]
pub enum TripsCmd {
    /// Record a trip.
    Add {
        #[arg(long)]
        person: String,
        /// ISO country codes (repeat, or comma-separated).
        #[arg(long = "country", num_args = 1.., required = true)]
        countries: Vec<String>,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        #[arg(long)]
        kind: String,
        /// Who approved taking the laptop along.
        #[arg(long)]
        approved_by: Option<String>,
    },
    List {
        #[arg(long)]
        json: bool,
    },
}

/// `vakt trips ...`.
pub async fn run(cli: &Cli, cmd: &TripsCmd) -> anyhow::Result<()> {
    match cmd {
        TripsCmd::Add {
            person,
            countries,
            from,
            to,
            kind,
            approved_by,
        } => {
            let t = client(cli)
                .await?
                .add_trip(pb::AddTripRequest {
                    person: person.clone(),
                    countries: countries.clone(),
                    from: from.clone(),
                    to: to.clone(),
                    kind: kind.clone(),
                    approved_by: approved_by.clone().unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner();
            outln!("{}", t.id);
        }
        TripsCmd::List { json } => {
            let trips = client(cli)
                .await?
                .list_trips(pb::ListTripsRequest {})
                .await
                .map_err(status)?
                .into_inner()
                .trips;
            if *json {
                let rows: Vec<Value> = trips
                    .iter()
                    .map(|t| json!({"id": t.id, "person": t.person, "countries": t.countries, "from": t.from,
                                    "to": t.to, "kind": t.kind, "approved_by": t.approved_by}))
                    .collect();
                outln!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                for t in &trips {
                    outln!(
                        "{} {} {} {}..{} {} {}",
                        t.id,
                        t.person,
                        t.countries.join(","),
                        t.from,
                        t.to,
                        t.kind,
                        t.approved_by
                    );
                }
            }
        }
    }
    Ok(())
}
