//! One command: the credential check, `MULTI` queueing, the name and arity checks, and the
//! dispatch to its family. Unknown commands answer `ERR unknown command` and the
//! connection stays open, as in Redis.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use crate::args::{text, word};
use crate::reply::{OK, Reply};
use crate::session::{Access, Session};
use crate::shared::Shared;
use crate::table::{self, LIST_EDITS};
use crate::{connection, errors, keys, lists, multi, strings};

/// What the connection does after a command.
pub enum Outcome {
    Reply(Reply),
    /// Answer, then close (`QUIT`).
    Close(Reply),
}

fn unknown(args: &[Bytes]) -> Reply {
    let shown: String = args[1..].iter().take(20).map(|a| format!("'{}' ", text(a))).collect();
    Reply::err(format!("ERR unknown command '{}', with args beginning with: {shown}", text(&args[0])))
}

/// Whether `name` runs even inside `MULTI` rather than being queued.
fn runs_inside_multi(name: &str) -> bool {
    matches!(name, "EXEC" | "DISCARD" | "MULTI" | "WATCH" | "QUIT" | "RESET")
}

pub async fn execute(shared: &Shared, session: &mut Session, args: Vec<Bytes>) -> Outcome {
    shared.commands_total.fetch_add(1, Ordering::Relaxed);
    let name = word(&args[0]);
    if session.access == Access::None && !matches!(name.as_str(), "AUTH" | "HELLO" | "QUIT" | "RESET") {
        return Outcome::Reply(connection::noauth());
    }
    let Some(spec) = table::find(&name) else {
        let reply = if LIST_EDITS.contains(&name.as_str()) { lists::append_only(&name) } else { unknown(&args) };
        if session.multi.is_some() {
            session.multi_failed = true;
        }
        return Outcome::Reply(reply);
    };
    if !table::arity_ok(spec, args.len()) {
        if session.multi.is_some() {
            session.multi_failed = true;
        }
        return Outcome::Reply(errors::arity(&name));
    }
    if session.multi.is_some() && !runs_inside_multi(&name) {
        return Outcome::Reply(multi::queue(session, &name, args));
    }
    let reply = match name.as_str() {
        "QUIT" => return Outcome::Close(OK),
        "RESET" => {
            session.reset(!shared.needs_auth());
            Reply::Simple("RESET")
        }
        "PING" => connection::ping(&args),
        "ECHO" => Reply::bulk(args[1].to_vec()),
        "HELLO" => connection::hello(shared, session, &args),
        "AUTH" => connection::auth(shared, session, &args),
        "SELECT" => connection::select(&args),
        "CLIENT" => connection::client(shared, session, &args),
        "COMMAND" => connection::command(&args),
        "INFO" => connection::info(shared, &args).await,
        "CONFIG" => connection::config(&args),
        "TIME" => connection::time(),
        "DBSIZE" => keys::dbsize(shared).await,
        "GET" => strings::get(shared, &args).await,
        "SET" => strings::set(shared, &args).await,
        "SETNX" => strings::setnx(shared, &args).await,
        "SETEX" | "PSETEX" => strings::setex(shared, &name, &args).await,
        "GETSET" => strings::getset(shared, &args).await,
        "GETDEL" => strings::getdel(shared, &args).await,
        "GETEX" => strings::getex(shared, &args).await,
        "MGET" => strings::mget(shared, &args).await,
        "MSET" | "MSETNX" => strings::mset(shared, &name, &args).await,
        "APPEND" => strings::append(shared, &args).await,
        "STRLEN" => strings::strlen(shared, &args).await,
        "GETRANGE" => strings::getrange(shared, &args).await,
        "SETRANGE" => strings::setrange(shared, &args).await,
        "INCR" | "DECR" | "INCRBY" | "DECRBY" => strings::incr(shared, &name, &args).await,
        "INCRBYFLOAT" => strings::incrbyfloat(shared, &args).await,
        "DEL" | "UNLINK" => keys::del(shared, &args).await,
        "EXISTS" => keys::exists(shared, &args).await,
        "TYPE" => keys::type_of(shared, &args).await,
        "EXPIRE" | "PEXPIRE" | "EXPIREAT" | "PEXPIREAT" => keys::expire(shared, &name, &args).await,
        "TTL" | "PTTL" | "EXPIRETIME" | "PEXPIRETIME" => keys::ttl(shared, &name, &args).await,
        "PERSIST" => keys::persist(shared, &args).await,
        "RENAME" | "RENAMENX" => keys::rename(shared, &name, &args).await,
        "SCAN" => keys::scan(shared, &args).await,
        "KEYS" => keys::keys(shared, &args).await,
        "RANDOMKEY" => keys::randomkey(shared).await,
        "RPUSH" | "RPUSHX" => lists::rpush(shared, &name, &args).await,
        "LRANGE" => lists::lrange(shared, &args).await,
        "LLEN" => lists::llen(shared, &args).await,
        "LINDEX" => lists::lindex(shared, &args).await,
        "MULTI" => multi::multi(session),
        "EXEC" => multi::exec(shared, session).await,
        "DISCARD" => multi::discard(session),
        "WATCH" => multi::watch(shared, session, &args).await,
        "UNWATCH" => {
            session.watched.clear();
            OK
        }
        "FLUSHDB" | "FLUSHALL" if session.access != Access::Admin => Reply::err(format!(
            "NOPERM {name} needs the admin credential (AUTH with admin.token); the cluster credential holds data \
             commands only"
        )),
        "FLUSHDB" | "FLUSHALL" => keys::flush(shared, &args).await,
        _ => unknown(&args),
    };
    Outcome::Reply(reply)
}
