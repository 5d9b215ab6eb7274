//! `ampstore members`: the cluster's members as gossip sees them, read from any process's
//! admin port (`/v1/members`): a table, JSON, or a live view with `--watch`.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ampstore_common::protocol::Role;
use ampstore_server::gossip::MemberView;
use clap::Args;
use serde_json::Value;

use crate::admin_http;
use crate::cluster_file::resolve_admin_addrs;
use crate::settings::SettingsArgs;

const WATCH_EVERY: Duration = Duration::from_millis(500);
const CLEAR_SCREEN: &str = "\x1b[2J\x1b[H";

#[derive(Args)]
pub struct MembersArgs {
    /// Admin HTTP address of any master or node (repeatable or comma-separated; the first
    /// that answers is used); default: the processes listed in DATA_DIR/cluster.json.
    #[arg(long, value_name = "ADDR")]
    admin: Vec<String>,
    /// Print the members as a JSON array (every field the admin port serves).
    #[arg(long)]
    json: bool,
    /// Poll every 0.5 s and redraw when the members change, until Ctrl-C (with --json: one
    /// JSON array per line, printed when a member joins, leaves or changes state, role,
    /// address or bump).
    #[arg(long)]
    watch: bool,
}

/// The member list as one process serves it.
pub struct Members {
    /// The admin address that answered.
    pub from: String,
    /// The members exactly as served (for `--json`).
    pub raw: Vec<Value>,
    pub members: Vec<MemberView>,
}

pub async fn run(settings: &SettingsArgs, args: MembersArgs) -> anyhow::Result<()> {
    let addrs = resolve_admin_addrs(&args.admin, settings)?;
    if args.watch {
        return watch(&addrs, args.json).await;
    }
    let m = fetch_members(&addrs).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&Value::Array(m.raw))?);
    } else {
        print!("{}", render_table(&m.members, now_unix_ms()));
    }
    Ok(())
}

/// `GET /v1/members` from the first address that answers with a member list.
pub async fn fetch_members(addrs: &[String]) -> anyhow::Result<Members> {
    let mut failures = Vec::new();
    for addr in addrs {
        match fetch_one(addr).await {
            Ok(m) => return Ok(m),
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    anyhow::bail!("no admin port answered: {}", failures.join("; "))
}

async fn fetch_one(addr: &str) -> anyhow::Result<Members> {
    let value = admin_http::get_json(addr, "/v1/members").await?;
    let members: Vec<MemberView> = serde_json::from_value(value.clone())
        .map_err(|e| anyhow::anyhow!("http://{addr}/v1/members: not a member list: {e}"))?;
    let Value::Array(raw) = value else { unreachable!("a member list is a JSON array") };
    Ok(Members { from: addr.to_string(), raw, members })
}

async fn watch(addrs: &[String], json: bool) -> anyhow::Result<()> {
    // The first poll must work: it catches a wrong address or a stopped cluster. Later
    // failures (a restarting process) are shown and polling goes on.
    let first = fetch_members(addrs).await?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        r = watch_loop(addrs, json, first) => r,
    }
}

/// Polls forever, printing when the key of what is shown changes; returns when stdout is
/// closed.
async fn watch_loop(addrs: &[String], json: bool, first: Members) -> anyhow::Result<()> {
    let mut fetched = Ok(first);
    let mut last_key: Option<String> = None;
    let mut last_table = String::new();
    loop {
        let (key, output) = match &fetched {
            Ok(m) if json => (membership_key(&m.members), Some(serde_json::to_string(&m.raw)? + "\n")),
            Ok(m) => {
                last_table = render_table(&m.members, now_unix_ms());
                let frame = format!("{CLEAR_SCREEN}{}{last_table}", watch_header(&format!("as seen by {}", m.from)));
                (format!("{}\n{}", m.from, table_key(&m.members)), Some(frame))
            }
            Err(e) if json => (format!("error: {e:#}"), None),
            Err(e) => {
                let header = watch_header("as last seen");
                (
                    format!("error: {e:#}"),
                    Some(format!("{CLEAR_SCREEN}{header}{last_table}\nno answer (retrying): {e:#}\n")),
                )
            }
        };
        if last_key.as_ref() != Some(&key) {
            match (output, &fetched) {
                (Some(text), _) => {
                    if !emit(&text)? {
                        return Ok(());
                    }
                }
                (None, Err(e)) => eprintln!("ampstore: warning: no answer (retrying): {e:#}"),
                (None, Ok(_)) => {}
            }
            last_key = Some(key);
        }
        tokio::time::sleep(WATCH_EVERY).await;
        fetched = fetch_members(addrs).await;
    }
}

fn watch_header(what: &str) -> String {
    format!("members {what}, every {:.1} s (Ctrl-C to stop)\n\n", WATCH_EVERY.as_secs_f64())
}

/// Writes to stdout; `false` when stdout is closed (a pipe's reader went away).
fn emit(text: &str) -> anyhow::Result<bool> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// What `--watch --json` reports a change of: the member set and each one's state, role,
/// addresses and bump (not its load nor `since`).
fn membership_key(members: &[MemberView]) -> String {
    let mut ids: Vec<String> = members
        .iter()
        .map(|m| {
            format!(
                "{} {} {} {} {} {} {}",
                m.id,
                role_str(m.role),
                m.state.as_str(),
                m.gossip,
                m.rpc.as_deref().unwrap_or("-"),
                m.admin.as_deref().unwrap_or("-"),
                m.bump
            )
        })
        .collect();
    ids.sort();
    ids.join("\n")
}

/// What the human `--watch` redraws on: the table without its SINCE column (which would
/// change every tick).
fn table_key(members: &[MemberView]) -> String {
    let mut key = String::new();
    for row in table_rows(members, 0) {
        for (i, cell) in row.iter().enumerate() {
            if i != SINCE_COLUMN {
                key.push_str(cell);
                key.push('\t');
            }
        }
        key.push('\n');
    }
    key
}

const HEADER: [&str; 10] = ["ID", "ROLE", "GOSSIP", "RPC", "STATE", "BUMP", "SINCE", "RANGES", "RESIDENT", "OPS/S"];
const SINCE_COLUMN: usize = 6;

fn table_rows(members: &[MemberView], now_unix_ms: u64) -> Vec<[String; 10]> {
    let mut sorted: Vec<&MemberView> = members.iter().collect();
    sorted.sort_by(|a, b| (role_rank(a.role), &a.id).cmp(&(role_rank(b.role), &b.id)));
    sorted
        .into_iter()
        .map(|m| {
            let load = m.load.as_ref();
            [
                m.id.to_string(),
                role_str(m.role).to_string(),
                m.gossip.to_string(),
                m.rpc.clone().unwrap_or_else(|| "-".into()),
                m.state.as_str().to_string(),
                m.bump.to_string(),
                human_age(m.since_unix_ms, now_unix_ms),
                load.map_or_else(|| "-".into(), |l| l.ranges.to_string()),
                load.map_or_else(|| "-".into(), |l| human_bytes(l.resident_bytes)),
                load.map_or_else(|| "-".into(), |l| l.ops_per_sec.to_string()),
            ]
        })
        .collect()
}

/// The member table, masters first, then nodes, collectors and the rest, each by id.
pub fn render_table(members: &[MemberView], now_unix_ms: u64) -> String {
    let header = HEADER.map(String::from);
    let rows = table_rows(members, now_unix_ms);
    align(std::iter::once(&header).chain(&rows))
}

/// Left-aligned columns two spaces apart, one line per row (no trailing spaces).
pub fn align<'a, const N: usize>(rows: impl Iterator<Item = &'a [String; N]> + Clone) -> String {
    let mut widths = [0usize; N];
    for row in rows.clone() {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (cell, w) in row.iter().zip(widths) {
            line.push_str(&format!("{cell:<w$}  "));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn role_rank(role: Option<Role>) -> u8 {
    match role {
        Some(Role::Master) => 0,
        Some(Role::Node) => 1,
        Some(Role::Collector) => 2,
        Some(Role::Client) => 3,
        Some(Role::Admin) => 4,
        None => 5,
    }
}

fn role_str(role: Option<Role>) -> &'static str {
    match role {
        Some(role) => role.as_str(),
        None => "-",
    }
}

pub fn now_unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How long ago `since_unix_ms` was: "12s", "3m", "2h", "4d" ("-" when unknown).
pub fn human_age(since_unix_ms: u64, now_unix_ms: u64) -> String {
    if since_unix_ms == 0 {
        return "-".into();
    }
    let s = now_unix_ms.saturating_sub(since_unix_ms) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// Binary units with one decimal: "512 B", "35.2 MiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    // 1023.96 would print as "1024.0": move to the next unit before that.
    while v >= 1023.95 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ampstore_common::NodeId;
    use ampstore_server::gossip::{GossipLoad, MemberState};

    pub(crate) const NOW: u64 = 1_700_000_000_000;

    pub(crate) fn member(
        id: &str,
        role: Option<Role>,
        port: u16,
        state: MemberState,
        load: Option<(u64, u64, u64)>,
    ) -> MemberView {
        MemberView {
            id: NodeId::new(id).unwrap(),
            role,
            gossip: format!("127.0.0.1:{port}").parse().unwrap(),
            rpc: role.map(|_| format!("127.0.0.1:{}", port + 1)),
            admin: role.map(|_| format!("127.0.0.1:{}", port + 2)),
            state,
            bump: 1,
            since_unix_ms: NOW - 12_000,
            load: load.map(|(resident_bytes, ranges, ops_per_sec)| GossipLoad { resident_bytes, ranges, ops_per_sec }),
        }
    }

    pub(crate) fn sample() -> Vec<MemberView> {
        let mut n2 = member("n-b", Some(Role::Node), 7120, MemberState::Down, Some((4_000_000, 0, 0)));
        n2.since_unix_ms = NOW - 3 * 60_000 - 5_000;
        n2.bump = 2;
        let mut m1 = member("m-a", Some(Role::Master), 7000, MemberState::Alive, None);
        m1.since_unix_ms = NOW - 2 * 3_600_000;
        vec![
            n2,
            member("n-a", Some(Role::Node), 7110, MemberState::Alive, Some((36_909_875, 6, 1520))),
            m1,
            member("x-1", None, 7200, MemberState::Suspect, None),
        ]
    }

    #[test]
    fn table_is_aligned_and_sorted_by_role() {
        let table = render_table(&sample(), NOW);
        let expected = "\
ID   ROLE    GOSSIP          RPC             STATE    BUMP  SINCE  RANGES  RESIDENT  OPS/S
m-a  master  127.0.0.1:7000  127.0.0.1:7001  alive    1     2h     -       -         -
n-a  node    127.0.0.1:7110  127.0.0.1:7111  alive    1     12s    6       35.2 MiB  1520
n-b  node    127.0.0.1:7120  127.0.0.1:7121  down     2     3m     0       3.8 MiB   0
x-1  -       127.0.0.1:7200  -               suspect  1     12s    -       -         -
";
        print!("{table}");
        assert_eq!(table, expected);
    }

    #[test]
    fn ages_and_bytes() {
        assert_eq!(human_age(NOW, NOW), "0s");
        assert_eq!(human_age(NOW - 59_999, NOW), "59s");
        assert_eq!(human_age(NOW - 60_000, NOW), "1m");
        assert_eq!(human_age(NOW - 7_200_000, NOW), "2h");
        assert_eq!(human_age(NOW - 3 * 86_400_000, NOW), "3d");
        assert_eq!(human_age(NOW + 5_000, NOW), "0s");
        assert_eq!(human_age(0, NOW), "-");
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(36_909_875), "35.2 MiB");
        assert_eq!(human_bytes(1024 * 1024 - 1), "1.0 MiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn watch_keys_ignore_since_and_load_as_documented() {
        let a = sample();
        let mut b = sample();
        b[1].since_unix_ms -= 60_000;
        assert_eq!(table_key(&a), table_key(&b));
        assert_eq!(membership_key(&a), membership_key(&b));
        b[1].load = Some(GossipLoad { resident_bytes: 1, ranges: 7, ops_per_sec: 3 });
        assert_ne!(table_key(&a), table_key(&b));
        assert_eq!(membership_key(&a), membership_key(&b));
        b[1].state = MemberState::Suspect;
        assert_ne!(membership_key(&a), membership_key(&b));
        let mut c = sample();
        c[0].bump = 3;
        assert_ne!(membership_key(&a), membership_key(&c));
        c.pop();
        assert_ne!(membership_key(&sample()), membership_key(&c));
    }

    #[test]
    fn served_json_parses_into_member_views() {
        let raw = serde_json::json!([{
            "id": "n-1", "role": "node", "gossip": "127.0.0.1:7002", "rpc": "127.0.0.1:7000",
            "admin": "127.0.0.1:7001", "state": "alive", "bump": 4, "since_unix_ms": NOW,
            "load": {"resident_bytes": 10, "ranges": 2, "ops_per_sec": 0}
        }, {
            "id": "m-1", "role": null, "gossip": "127.0.0.1:7012", "rpc": null, "admin": null,
            "state": "left", "bump": 1, "since_unix_ms": NOW, "load": null
        }]);
        let members: Vec<MemberView> = serde_json::from_value(raw).unwrap();
        assert_eq!(members[0].load.unwrap().ranges, 2);
        assert_eq!(members[1].state, MemberState::Left);
    }

    #[tokio::test]
    async fn first_answering_address_wins() {
        let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead_addr = dead.local_addr().unwrap().to_string();
        drop(dead);
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_addr = live.local_addr().unwrap().to_string();
        let body = serde_json::to_string(&sample()).unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut sock, _) = live.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = sock.read(&mut buf).await.unwrap();
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
            sock.write_all(head.as_bytes()).await.unwrap();
            sock.write_all(body.as_bytes()).await.unwrap();
        });
        let m = fetch_members(&[dead_addr.clone(), live_addr.clone()]).await.unwrap();
        assert_eq!(m.from, live_addr);
        assert_eq!(m.members.len(), 4);
        assert_eq!(m.raw.len(), 4);
        let e = fetch_members(std::slice::from_ref(&dead_addr)).await.err().unwrap().to_string();
        assert!(e.starts_with("no admin port answered: ") && e.contains(&dead_addr), "{e}");
    }
}
