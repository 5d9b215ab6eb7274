//! Bank: transfers between accounts, each one transaction conditioned on the versions it
//! read, and consistent reads of every balance; after healing, the final total.

use std::time::Duration;

use ampstore_client::{Client, Error, Txn};
use ampstore_common::Key;

use super::{Ctx, breathe, until_ok, write_outcome};
use crate::history::{FINAL_PROCESS, Op, Outcome};
use crate::rng::Rng;

pub const ACCOUNTS: u64 = 5;
pub const OPENING_BALANCE: i64 = 100;

pub fn account(i: u64) -> Key {
    Key::from(format!("acct-{i}"))
}

fn all() -> Vec<Key> {
    (0..ACCOUNTS).map(account).collect()
}

/// Opens the accounts (one transaction) and records the total they hold.
pub async fn open(ctx: &Ctx) -> anyhow::Result<()> {
    let inv = ctx.rec.invoke(FINAL_PROCESS);
    let mut txn = Txn::new();
    for k in all() {
        txn = txn.require_absent(k.clone()).put(k, OPENING_BALANCE.to_string());
    }
    until_ok(Duration::from_secs(30), || ctx.client.commit(txn.clone())).await?;
    ctx.rec.complete(inv, Outcome::Ok, Op::BankOpen { total: OPENING_BALANCE * ACCOUNTS as i64 });
    Ok(())
}

pub async fn transfers(ctx: Ctx, mut rng: Rng) {
    let mut process = ctx.rec.process();
    while !ctx.stopped() {
        let from = rng.below(ACCOUNTS);
        let to = (from + 1 + rng.below(ACCOUNTS - 1)) % ACCOUNTS;
        let amount = rng.between(1, 10) as i64;
        let op = Op::Transfer { from: format!("acct-{from}"), to: format!("acct-{to}"), amount };
        let inv = ctx.rec.invoke(process);
        let outcome = match transfer(&ctx.client, account(from), account(to), amount).await {
            Ok(()) => Outcome::Ok,
            Err(e) => write_outcome(&e),
        };
        ctx.rec.complete(inv, outcome, op);
        if outcome == Outcome::Unknown {
            process = ctx.rec.process();
        }
        breathe(&mut rng).await;
    }
}

async fn transfer(client: &Client, from: Key, to: Key, amount: i64) -> Result<(), Error> {
    let seen = client.read_consistent(vec![from.clone(), to.clone()]).await?;
    let (Some(a), Some(b)) = (&seen[0], &seen[1]) else {
        return Err(Error::invalid("an account is missing"));
    };
    let txn = Txn::new()
        .require_version(from.clone(), a.version)
        .require_version(to.clone(), b.version)
        .put(from, (balance(&a.value) - amount).to_string())
        .put(to, (balance(&b.value) + amount).to_string());
    client.commit(txn).await.map(|_| ())
}

pub async fn readers(ctx: Ctx, mut rng: Rng) {
    let process = ctx.rec.process();
    while !ctx.stopped() {
        let inv = ctx.rec.invoke(process);
        match total(&ctx.client).await {
            Ok(total) => ctx.rec.complete(inv, Outcome::Ok, Op::ReadTotal { total }),
            Err(_) => ctx.rec.complete(inv, Outcome::Fail, Op::ReadTotal { total: 0 }),
        }
        breathe(&mut rng).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The sum of every balance, read at one moment; a missing account counts 0.
async fn total(client: &Client) -> Result<i64, Error> {
    Ok(client.read_consistent(all()).await?.iter().map(|v| v.as_ref().map_or(0, |v| balance(&v.value))).sum())
}

/// An unparsable balance counts as a huge amount, so the total shows it.
fn balance(bytes: &[u8]) -> i64 {
    std::str::from_utf8(bytes).ok().and_then(|s| s.parse().ok()).unwrap_or(1 << 40)
}

pub async fn final_reads(ctx: &Ctx) -> anyhow::Result<()> {
    let inv = ctx.rec.invoke(FINAL_PROCESS);
    let total = until_ok(Duration::from_secs(30), || total(&ctx.client)).await?;
    ctx.rec.complete(inv, Outcome::Ok, Op::ReadTotal { total });
    Ok(())
}
