//! The commands this interface answers: name, Redis arity (negative: at least that many
//! words, the name included), flags for `COMMAND`, and where the keys are.

pub struct CommandSpec {
    pub name: &'static str,
    pub arity: i32,
    pub flags: &'static [&'static str],
    /// First key, last key (negative: from the end), step; 0 0 0 for none.
    pub keys: (i32, i32, i32),
}

const fn spec(name: &'static str, arity: i32, flags: &'static [&'static str], keys: (i32, i32, i32)) -> CommandSpec {
    CommandSpec { name, arity, flags, keys }
}

const R: &[&str] = &["readonly", "fast"];
const W: &[&str] = &["write"];
const C: &[&str] = &["fast", "loading", "stale"];
const A: &[&str] = &["admin", "write"];
const ONE: (i32, i32, i32) = (1, 1, 1);
const NONE: (i32, i32, i32) = (0, 0, 0);
const ALL: (i32, i32, i32) = (1, -1, 1);

/// Every command, lower case, as `COMMAND` lists them.
pub const COMMANDS: &[CommandSpec] = &[
    spec("ping", -1, C, NONE),
    spec("echo", 2, C, NONE),
    spec("hello", -1, C, NONE),
    spec("auth", -2, C, NONE),
    spec("select", 2, C, NONE),
    spec("client", -2, C, NONE),
    spec("quit", -1, C, NONE),
    spec("reset", 1, C, NONE),
    spec("command", -1, C, NONE),
    spec("info", -1, C, NONE),
    spec("config", -2, C, NONE),
    spec("time", 1, C, NONE),
    spec("dbsize", 1, &["readonly"], NONE),
    spec("get", 2, R, ONE),
    spec("set", -3, W, ONE),
    spec("setnx", 3, W, ONE),
    spec("setex", 4, W, ONE),
    spec("psetex", 4, W, ONE),
    spec("getset", 3, W, ONE),
    spec("getdel", 2, W, ONE),
    spec("getex", -2, W, ONE),
    spec("mget", -2, R, ALL),
    spec("mset", -3, W, (1, -1, 2)),
    spec("msetnx", -3, W, (1, -1, 2)),
    spec("append", 3, W, ONE),
    spec("strlen", 2, R, ONE),
    spec("getrange", 4, R, ONE),
    spec("setrange", 4, W, ONE),
    spec("incr", 2, W, ONE),
    spec("decr", 2, W, ONE),
    spec("incrby", 3, W, ONE),
    spec("decrby", 3, W, ONE),
    spec("incrbyfloat", 3, W, ONE),
    spec("del", -2, W, ALL),
    spec("unlink", -2, W, ALL),
    spec("exists", -2, R, ALL),
    spec("type", 2, R, ONE),
    spec("expire", -3, W, ONE),
    spec("pexpire", -3, W, ONE),
    spec("expireat", -3, W, ONE),
    spec("pexpireat", -3, W, ONE),
    spec("ttl", 2, R, ONE),
    spec("pttl", 2, R, ONE),
    spec("expiretime", 2, R, ONE),
    spec("pexpiretime", 2, R, ONE),
    spec("persist", 2, W, ONE),
    spec("rename", 3, W, (1, 2, 1)),
    spec("renamenx", 3, W, (1, 2, 1)),
    spec("scan", -2, &["readonly"], NONE),
    spec("keys", 2, &["readonly"], NONE),
    spec("randomkey", 1, &["readonly"], NONE),
    spec("rpush", -3, W, ONE),
    spec("rpushx", -3, W, ONE),
    spec("lrange", 4, &["readonly"], ONE),
    spec("llen", 2, R, ONE),
    spec("lindex", 3, &["readonly"], ONE),
    spec("multi", 1, C, NONE),
    spec("exec", 1, &[], NONE),
    spec("discard", 1, C, NONE),
    spec("watch", -2, C, ALL),
    spec("unwatch", 1, C, NONE),
    spec("flushdb", -1, A, NONE),
    spec("flushall", -1, A, NONE),
];

/// List commands that would change a list in place: Ampstore lists are append-only.
pub const LIST_EDITS: &[&str] = &[
    "LPUSH",
    "LPUSHX",
    "LPOP",
    "RPOP",
    "LSET",
    "LREM",
    "LINSERT",
    "LTRIM",
    "LMOVE",
    "BLMOVE",
    "RPOPLPUSH",
    "BRPOPLPUSH",
    "BLPOP",
    "BRPOP",
    "LMPOP",
    "BLMPOP",
];

/// The spec of `name` (upper case).
pub fn find(name: &str) -> Option<&'static CommandSpec> {
    COMMANDS.iter().find(|c| c.name.eq_ignore_ascii_case(name))
}

/// Whether `words` (the name included) is a valid count for `spec`.
pub fn arity_ok(spec: &CommandSpec, words: usize) -> bool {
    let words = words as i32;
    if spec.arity >= 0 { words == spec.arity } else { words >= -spec.arity }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_lower_case() {
        for (i, c) in COMMANDS.iter().enumerate() {
            assert_eq!(c.name, c.name.to_ascii_lowercase());
            assert!(COMMANDS[i + 1..].iter().all(|d| d.name != c.name), "{} twice", c.name);
        }
        assert!(arity_ok(find("GET").unwrap(), 2));
        assert!(!arity_ok(find("get").unwrap(), 3));
        assert!(arity_ok(find("del").unwrap(), 5));
        assert!(!arity_ok(find("del").unwrap(), 1));
    }
}
