//! talariactl: the command line for the controller's REST API.

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::Value;

#[derive(Debug, Parser)]
#[command(version, about = "Inspect talaria through the controller's REST API")]
struct Cli {
    /// Controller REST base URL.
    #[arg(
        long,
        short,
        env = "TALARIA_SERVER",
        default_value = "http://127.0.0.1:9080"
    )]
    server: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Switch tables, read live from the switch.
    Tables {
        #[command(subcommand)]
        cmd: TablesCmd,
    },
    /// Switch counters, read live: drops by reason, load-balancer events
    /// (the outside clients' timestamp-cookie hits and misses among them)
    /// and traffic by service id; cells that counted nothing are left out.
    Counters {
        /// Switch id (default: every switch).
        #[arg(long)]
        switch: Option<String>,
        /// Output format.
        #[arg(long, short, value_enum, default_value = "table")]
        output: Output,
    },
    /// Services and what was programmed for them.
    Services {
        /// Output format.
        #[arg(long, short, value_enum, default_value = "table")]
        output: Output,
    },
    /// Controller and switch status.
    Status {
        /// Output format.
        #[arg(long, short, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Debug, Subcommand)]
enum TablesCmd {
    /// Print table entries.
    Dump {
        /// Switch id (default: every switch).
        #[arg(long)]
        switch: Option<String>,
        /// Table short name, e.g. service_v4 (default: all).
        #[arg(long)]
        table: Option<String>,
        /// Output format.
        #[arg(long, short, value_enum, default_value = "table")]
        output: Output,
    },
}

async fn get(base: &str, path: &str) -> Result<Value> {
    let url = format!("{}{}", base.trim_end_matches('/'), path);
    let r = reqwest::get(&url)
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = r.status();
    let v: Value = r
        .json()
        .await
        .with_context(|| format!("GET {url}: not JSON"))?;
    if !status.is_success() {
        bail!(
            "GET {url}: {status}: {}",
            v.get("error").and_then(Value::as_str).unwrap_or("")
        );
    }
    Ok(v)
}

/// Prints rows as aligned columns.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// One entry of a table dump as cells: its match value for each key field
/// (`*` for an omitted LPM field, the wildcard), then `action(params)`.
fn entry_row(key: &[String], e: &Value) -> Vec<String> {
    let mut row: Vec<String> = key
        .iter()
        .map(|k| e["match"].get(k).map_or_else(|| "*".into(), s))
        .collect();
    let params: Vec<String> = e["params"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(n, v)| format!("{n}={}", s(v)))
        .collect();
    let default = if e["is_default"] == true {
        " (default)"
    } else {
        ""
    };
    row.push(format!(
        "{}({}){default}",
        s(&e["action"]),
        params.join(", ")
    ));
    row
}

/// The switch ids `switch` names: itself, or every switch.
async fn switch_ids(base: &str, switch: Option<String>) -> Result<Vec<String>> {
    Ok(match switch {
        Some(s) => vec![s],
        None => get(base, "/v1/switches")
            .await?
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|s| s["id"].as_str().map(String::from))
            .collect(),
    })
}

/// One counter cell as cells: the counter, what its index means (a drop
/// reason, an event, a service id), packets and bytes.
fn counter_row(counter: &str, cell: &Value) -> Vec<String> {
    let short = counter.rsplit('.').next().unwrap_or(counter);
    let what = match (&cell["reason"], &cell["event"]) {
        (Value::String(r), _) => r.clone(),
        (_, Value::String(e)) => e.clone(),
        _ => s(&cell["index"]),
    };
    vec![
        short.to_string(),
        what,
        s(&cell["packets"]),
        s(&cell["bytes"]),
    ]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let base = cli.server.as_str();
    match cli.cmd {
        Cmd::Counters { switch, output } => {
            let mut all = serde_json::Map::new();
            for sw in switch_ids(base, switch).await? {
                let v = get(base, &format!("/v1/switches/{sw}/counters")).await?;
                all.insert(sw, v);
            }
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&Value::Object(all))?),
                Output::Table => {
                    for (sw, counters) in &all {
                        println!("== switch {sw}");
                        let rows: Vec<Vec<String>> = counters
                            .as_object()
                            .into_iter()
                            .flatten()
                            .flat_map(|(name, cells)| {
                                cells
                                    .as_array()
                                    .into_iter()
                                    .flatten()
                                    .filter(|c| c["packets"].as_u64().unwrap_or(0) > 0)
                                    .map(move |c| counter_row(name, c))
                            })
                            .collect();
                        print_table(&["COUNTER", "INDEX", "PACKETS", "BYTES"], &rows);
                        println!();
                    }
                }
            }
        }
        Cmd::Tables {
            cmd:
                TablesCmd::Dump {
                    switch,
                    table,
                    output,
                },
        } => {
            let switches = switch_ids(base, switch).await?;
            let mut all = serde_json::Map::new();
            for sw in &switches {
                let dumps = match &table {
                    Some(t) => Value::Array(vec![
                        get(base, &format!("/v1/switches/{sw}/tables/{t}")).await?,
                    ]),
                    None => get(base, &format!("/v1/switches/{sw}/tables")).await?,
                };
                all.insert(sw.clone(), dumps);
            }
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&Value::Object(all))?),
                Output::Table => {
                    for (sw, dumps) in &all {
                        for d in dumps.as_array().into_iter().flatten() {
                            let entries = d["entries"].as_array().cloned().unwrap_or_default();
                            println!(
                                "== switch {sw} table {} ({} of {} entries)",
                                s(&d["table"]),
                                entries.len(),
                                d["size"]
                            );
                            let key: Vec<String> =
                                d["key"].as_array().into_iter().flatten().map(s).collect();
                            let rows: Vec<Vec<String>> =
                                entries.iter().map(|e| entry_row(&key, e)).collect();
                            let mut header: Vec<&str> = key.iter().map(String::as_str).collect();
                            header.push("action");
                            print_table(&header, &rows);
                            for u in d["undecodable"].as_array().into_iter().flatten() {
                                println!("undecodable: {}", s(u));
                            }
                            println!();
                        }
                    }
                }
            }
        }
        Cmd::Services { output } => {
            let v = get(base, "/v1/services").await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&v)?),
                Output::Table => {
                    let mut rows = Vec::new();
                    for svc in v.as_array().into_iter().flatten() {
                        let name = format!(
                            "{}/{}",
                            s(&svc["service"]["namespace"]),
                            s(&svc["service"]["name"])
                        );
                        let dp = svc["data_path"].as_array().cloned().unwrap_or_default();
                        let notes = svc["notes"]
                            .as_array()
                            .map(|n| n.iter().map(s).collect::<Vec<_>>().join("; "))
                            .unwrap_or_default();
                        if dp.is_empty() {
                            rows.push(vec![
                                name,
                                s(&svc["service_type"]),
                                "-".into(),
                                "-".into(),
                                "-".into(),
                                "-".into(),
                                notes,
                            ]);
                            continue;
                        }
                        for p in dp {
                            rows.push(vec![
                                name.clone(),
                                s(&svc["service_type"]),
                                format!(
                                    "{}:{}/{}{}",
                                    bracketed(s(&p["key"]["vip"])),
                                    p["key"]["port"],
                                    s(&p["key"]["proto"]),
                                    match p["frontend"].as_str() {
                                        Some("node_port") => " (nodePort)",
                                        Some("external") => " (external)",
                                        _ => "",
                                    }
                                ),
                                p["service_id"].to_string(),
                                format!(
                                    "{}+{}",
                                    p["active"].as_object().map(|o| o.len()).unwrap_or(0),
                                    p["draining"].as_object().map(|o| o.len()).unwrap_or(0)
                                ),
                                p["buckets"].to_string(),
                                notes.clone(),
                            ]);
                        }
                    }
                    print_table(
                        &[
                            "SERVICE",
                            "TYPE",
                            "VIP",
                            "ID",
                            "BACKENDS(active+draining)",
                            "BUCKETS",
                            "NOTES",
                        ],
                        &rows,
                    );
                }
            }
        }
        Cmd::Status { output } => {
            let v = get(base, "/v1/status").await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&v)?),
                Output::Table => {
                    println!("ready:         {}", s(&v["ready"]));
                    println!("plan version:  {}", v["plan_version"]);
                    println!(
                        "services:      {} ({} ports)",
                        v["services"], v["service_ports"]
                    );
                    println!(
                        "ids:           service {}/{} backend {}/{} (in use/quarantined)",
                        v["service_ids"]["in_use"],
                        v["service_ids"]["quarantined"],
                        v["backend_ids"]["in_use"],
                        v["backend_ids"]["quarantined"]
                    );
                    let rows: Vec<Vec<String>> = v["switches"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|sw| {
                            vec![
                                s(&sw["id"]),
                                s(&sw["address"]),
                                sw["status"]["connected"].to_string(),
                                sw["status"]["synced_version"].to_string(),
                                sw["status"]["updates_written"].to_string(),
                                sw["status"]["write_errors"].to_string(),
                                s(&sw["status"]["last_error"]),
                            ]
                        })
                        .collect();
                    println!();
                    print_table(
                        &[
                            "SWITCH",
                            "ADDRESS",
                            "CONNECTED",
                            "SYNCED",
                            "UPDATES",
                            "ERRORS",
                            "LAST ERROR",
                        ],
                        &rows,
                    );
                    let notes = v["not_in_data_path"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    if !notes.is_empty() {
                        println!("\nnot in data path:");
                        for n in notes {
                            for line in n["notes"].as_array().into_iter().flatten() {
                                println!("  {}: {}", s(&n["service"]), s(line));
                            }
                        }
                    }
                    let skipped = v["skipped"].as_array().cloned().unwrap_or_default();
                    if !skipped.is_empty() {
                        println!("\nskipped objects:");
                        for k in skipped {
                            println!(
                                "  {} {}: {} ({})",
                                s(&k["kind"]),
                                s(&k["object"]),
                                s(&k["reason"]),
                                s(&k["detail"])
                            );
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// An address for `addr:port`: an IPv6 one in brackets.
fn bracketed(addr: String) -> String {
    if addr.contains(':') {
        format!("[{addr}]")
    } else {
        addr
    }
}
