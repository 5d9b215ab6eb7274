//! Connection and server commands: `PING`, `ECHO`, `HELLO`, `AUTH`, `SELECT`, `CLIENT`,
//! `COMMAND`, `INFO`, `CONFIG GET`, `TIME`.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use crate::args::{text, word};
use crate::errors::{NOAUTH, SYNTAX, WRONGPASS};
use crate::keys;
use crate::reply::{OK, Reply};
use crate::session::{Access, Session};
use crate::shared::Shared;
use crate::table::{self, COMMANDS};

/// The Redis version whose command semantics this interface follows (clients that gate
/// features on `HELLO`'s or `INFO`'s version see it).
pub const REDIS_VERSION: &str = "7.2.0";

pub fn ping(args: &[Bytes]) -> Reply {
    match args.get(1) {
        Some(m) => Reply::bulk(m.to_vec()),
        None => Reply::Simple("PONG"),
    }
}

/// What a password proves: the admin credential, the cluster credential, or nothing.
fn check(shared: &Shared, user: Option<&[u8]>, password: &[u8]) -> Option<Access> {
    if user.is_some_and(|u| u != b"default") {
        return None;
    }
    let s = &shared.settings;
    if s.admin_token.as_deref().is_some_and(|t| t.as_bytes() == password) {
        Some(Access::Admin)
    } else if s.cluster_token.as_deref().is_some_and(|t| t.as_bytes() == password) {
        Some(Access::Data)
    } else {
        None
    }
}

/// `AUTH password` or `AUTH default password`.
pub fn auth(shared: &Shared, session: &mut Session, args: &[Bytes]) -> Reply {
    let (user, password) = match args {
        [_, p] => (None, p),
        [_, u, p] => (Some(&u[..]), p),
        _ => return Reply::err(SYNTAX),
    };
    if !shared.needs_auth() {
        return Reply::err(
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your \
             configuration is correct?",
        );
    }
    match check(shared, user, password) {
        Some(access) => {
            session.access = access;
            OK
        }
        None => Reply::err(WRONGPASS),
    }
}

/// `HELLO [protover [AUTH user password] [SETNAME name]]`: switches the protocol and answers
/// the server's description.
pub fn hello(shared: &Shared, session: &mut Session, args: &[Bytes]) -> Reply {
    let mut proto = session.proto;
    let mut i = 1;
    if let Some(v) = args.get(1) {
        match std::str::from_utf8(v).ok().and_then(|s| s.parse::<i64>().ok()) {
            Some(2) => proto = 2,
            Some(3) => proto = 3,
            Some(_) => return Reply::err("NOPROTO unsupported protocol version"),
            None => return Reply::err("ERR Protocol version is not an integer or out of range"),
        }
        i = 2;
    }
    let mut name = None;
    while i < args.len() {
        match (word(&args[i]).as_str(), args.get(i + 1), args.get(i + 2)) {
            ("AUTH", Some(u), Some(p)) => {
                match check(shared, Some(u), p) {
                    Some(access) => session.access = access,
                    None => return Reply::err(WRONGPASS),
                }
                i += 3;
            }
            ("SETNAME", Some(n), _) => {
                if let Err(r) = valid_name(n) {
                    return r;
                }
                name = Some(text(n));
                i += 2;
            }
            _ => return Reply::err(format!("ERR Syntax error in HELLO option '{}'", text(&args[i]))),
        }
    }
    if session.access == Access::None {
        return Reply::err(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH \
             <user> <pass> option can be used to authenticate the client and select the RESP protocol version at \
             the same time",
        );
    }
    session.proto = proto;
    if name.is_some() {
        session.name = name;
    }
    Reply::Map(vec![
        (Reply::text("server"), Reply::text("ampstore")),
        (Reply::text("version"), Reply::text(REDIS_VERSION)),
        (Reply::text("ampstore_version"), Reply::text(env!("CARGO_PKG_VERSION"))),
        (Reply::text("proto"), Reply::Int(i64::from(proto))),
        (Reply::text("id"), Reply::Int(session.id as i64)),
        (Reply::text("mode"), Reply::text("standalone")),
        (Reply::text("role"), Reply::text("master")),
        (Reply::text("modules"), Reply::Array(Vec::new())),
    ])
}

fn valid_name(name: &[u8]) -> Result<(), Reply> {
    if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
        return Err(Reply::err("ERR Client names cannot contain spaces, newlines or special characters."));
    }
    Ok(())
}

pub fn select(args: &[Bytes]) -> Reply {
    match std::str::from_utf8(&args[1]).ok().and_then(|s| s.parse::<i64>().ok()) {
        Some(0) => OK,
        Some(_) => Reply::err("ERR DB index is out of range (Ampstore has one database, 0)"),
        None => Reply::err("ERR value is not an integer or out of range"),
    }
}

fn client_info(shared: &Shared, session: &Session) -> String {
    // Every field of Redis's line, so client libraries parse it (redis-py reads the numeric
    // ones as integers); buffer and memory counters Ampstore does not keep are 0.
    format!(
        "id={} addr={} laddr={} fd=0 name={} age={} idle=0 flags=N db=0 sub=0 psub=0 ssub=0 multi={} qbuf=0 \
         qbuf-free=0 argv-mem=0 multi-mem=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd=client|info user=default \
         redir=-1 resp={} lib-name={} lib-ver={}\n",
        session.id,
        session.peer,
        shared.settings.addr,
        session.name.as_deref().unwrap_or(""),
        session.started.elapsed().as_secs(),
        session.multi.as_ref().map_or(-1, |q| q.len() as i64),
        session.proto,
        session.lib_name.as_deref().unwrap_or(""),
        session.lib_ver.as_deref().unwrap_or(""),
    )
}

/// `CLIENT ID | GETNAME | SETNAME name | INFO | LIST | SETINFO LIB-NAME|LIB-VER value`.
pub fn client(shared: &Shared, session: &mut Session, args: &[Bytes]) -> Reply {
    let sub = word(&args[1]);
    match (sub.as_str(), &args[2..]) {
        ("ID", []) => Reply::Int(session.id as i64),
        ("GETNAME", []) => session.name.as_ref().map_or(Reply::Nil, |n| Reply::text(n)),
        ("SETNAME", [n]) => match valid_name(n) {
            Ok(()) => {
                session.name = if n.is_empty() { None } else { Some(text(n)) };
                OK
            }
            Err(r) => r,
        },
        ("INFO", []) | ("LIST", []) => Reply::bulk(client_info(shared, session)),
        ("SETINFO", [attr, value]) => {
            match word(attr).as_str() {
                "LIB-NAME" => session.lib_name = Some(text(value)),
                "LIB-VER" => session.lib_ver = Some(text(value)),
                other => return Reply::err(format!("ERR Unrecognized option '{other}'")),
            }
            OK
        }
        _ => Reply::err(format!("ERR unknown subcommand or wrong number of arguments for '{sub}'. Try CLIENT HELP.")),
    }
}

fn command_entry(c: &table::CommandSpec) -> Reply {
    Reply::Array(vec![
        Reply::text(c.name),
        Reply::Int(i64::from(c.arity)),
        Reply::Array(c.flags.iter().map(|f| Reply::Simple(f)).collect()),
        Reply::Int(i64::from(c.keys.0)),
        Reply::Int(i64::from(c.keys.1)),
        Reply::Int(i64::from(c.keys.2)),
    ])
}

/// `COMMAND`, `COMMAND COUNT`, `COMMAND INFO name...`, `COMMAND DOCS [name...]` (no docs:
/// an empty map, which `redis-cli` takes as "no hints").
pub fn command(args: &[Bytes]) -> Reply {
    let sub = args.get(1).map(|a| word(a));
    match sub.as_deref() {
        None => Reply::Array(COMMANDS.iter().map(command_entry).collect()),
        Some("COUNT") => Reply::Int(COMMANDS.len() as i64),
        Some("INFO") => Reply::Array(
            args[2..].iter().map(|a| table::find(&word(a)).map_or(Reply::NilArray, command_entry)).collect(),
        ),
        Some("DOCS") => Reply::Map(Vec::new()),
        Some(other) => {
            Reply::err(format!("ERR unknown subcommand or wrong number of arguments for '{other}'. Try COMMAND HELP."))
        }
    }
}

/// `CONFIG GET pattern`: Ampstore has no Redis configuration to show (an empty answer, which
/// `redis-benchmark` accepts); `CONFIG SET` is refused.
pub fn config(args: &[Bytes]) -> Reply {
    match word(&args[1]).as_str() {
        "GET" => Reply::Map(Vec::new()),
        "RESETSTAT" => OK,
        other => Reply::err(format!("ERR CONFIG {other} is not supported: Ampstore is configured in its own settings")),
    }
}

pub fn time() -> Reply {
    // One clock reading for both fields.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Reply::Array(vec![Reply::bulk(now.as_secs().to_string()), Reply::bulk(now.subsec_micros().to_string())])
}

/// The process's resident bytes (`/proc/self/statm`), 0 where that cannot be read.
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

/// `INFO [section...]`: server, clients, memory, stats, replication (a single master) and
/// keyspace (counted by a scan of every key, so it takes time in proportion to them).
pub async fn info(shared: &Shared, args: &[Bytes]) -> Reply {
    let asked: Vec<String> = args[1..].iter().map(|a| text(a).to_ascii_lowercase()).collect();
    let want =
        |s: &str| asked.is_empty() || asked.iter().any(|a| a == s || a == "all" || a == "everything" || a == "default");
    let mut out = String::new();
    if want("server") {
        let port = shared.settings.addr.rsplit(':').next().unwrap_or("0");
        out.push_str(&format!(
            "# Server\r\nredis_version:{REDIS_VERSION}\r\nampstore_version:{}\r\nredis_mode:standalone\r\n\
             os:{}\r\nprocess_id:{}\r\nrun_id:{}\r\ntcp_port:{port}\r\nuptime_in_seconds:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::process::id(),
            shared.settings.server_id,
            shared.started.elapsed().as_secs(),
        ));
    }
    if want("clients") {
        out.push_str(&format!("# Clients\r\nconnected_clients:{}\r\n\r\n", shared.connected.load(Ordering::Relaxed)));
    }
    if want("memory") {
        let rss = resident_bytes();
        out.push_str(&format!("# Memory\r\nused_memory:{rss}\r\nused_memory_rss:{rss}\r\n\r\n"));
    }
    if want("stats") {
        out.push_str(&format!(
            "# Stats\r\ntotal_commands_processed:{}\r\ntotal_connections_received:{}\r\n\r\n",
            shared.commands_total.load(Ordering::Relaxed),
            shared.next_client_id.load(Ordering::Relaxed) - 1,
        ));
    }
    if want("replication") {
        out.push_str("# Replication\r\nrole:master\r\nconnected_slaves:0\r\n\r\n");
    }
    if want("keyspace") {
        out.push_str("# Keyspace\r\n");
        match keys::count_keys(shared).await {
            Ok(0) => {}
            Ok(n) => out.push_str(&format!("db0:keys={n},expires=0,avg_ttl=0\r\n")),
            Err(e) => return crate::errors::from_error(&e),
        }
        out.push_str("\r\n");
    }
    Reply::bulk(out)
}

/// The reply to a command sent before `AUTH` when the cluster has a credential.
pub fn noauth() -> Reply {
    Reply::err(NOAUTH)
}
