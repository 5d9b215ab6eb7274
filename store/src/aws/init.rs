//! Creating the tables and the bucket (`ampstore init`).

use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableDescription, TableStatus,
};
use aws_sdk_s3::operation::create_bucket::CreateBucketError;
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use std::fmt;
use std::time::{Duration, Instant};

use super::client::Clients;
use super::error::{http_status, unavailable};
use super::{log_table, meta_table};
use crate::config::AwsConfig;
use ampstore_common::error::Error;

/// How long `init` waits for new tables to become active (usually seconds).
const TABLE_ACTIVE_WAIT: Duration = Duration::from_secs(120);
const TABLE_POLL: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceKind {
    Table,
    Bucket,
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResourceKind::Table => "dynamodb table",
            ResourceKind::Bucket => "s3 bucket",
        })
    }
}

/// One table or bucket `init` looked after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitResource {
    pub kind: ResourceKind,
    pub name: String,
    /// `false`: it already existed (with the right key schema, for a table).
    pub created: bool,
}

/// What `init` did, one line per resource when displayed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitReport {
    pub resources: Vec<InitResource>,
}

impl fmt::Display for InitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.resources.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            let state = if r.created { "created" } else { "already exists" };
            write!(f, "{} {}: {state}", r.kind, r.name)?;
        }
        Ok(())
    }
}

/// A table and its key: (partition key attribute, type), (sort key attribute, type).
struct TableSpec {
    name: String,
    hash: (&'static str, ScalarAttributeType),
    range: (&'static str, ScalarAttributeType),
}

/// The log (`r` range id, `s` seq) and meta (`p` partition, `k` sort key) tables.
fn tables(cfg: &AwsConfig) -> [TableSpec; 2] {
    [
        TableSpec { name: log_table(cfg), hash: ("r", ScalarAttributeType::N), range: ("s", ScalarAttributeType::N) },
        TableSpec { name: meta_table(cfg), hash: ("p", ScalarAttributeType::S), range: ("k", ScalarAttributeType::B) },
    ]
}

pub(super) async fn run(clients: &Clients, cfg: &AwsConfig) -> Result<InitReport, Error> {
    let tables = tables(cfg);
    let mut resources = Vec::new();
    for t in &tables {
        resources.push(InitResource {
            kind: ResourceKind::Table,
            name: t.name.clone(),
            created: create_table(clients, t).await?,
        });
    }
    // Waiting only once both are requested lets DynamoDB create them side by side.
    for t in &tables {
        wait_active(clients, t).await?;
    }
    resources.push(InitResource {
        kind: ResourceKind::Bucket,
        name: cfg.bucket.clone(),
        created: create_bucket(clients, &cfg.bucket, &cfg.region).await?,
    });
    Ok(InitReport { resources })
}

/// Creates the table; `false` if it already existed.
async fn create_table(clients: &Clients, t: &TableSpec) -> Result<bool, Error> {
    let mut req = clients.ddb.create_table().table_name(&t.name).billing_mode(BillingMode::PayPerRequest);
    for ((attr, ty), key_type) in [(&t.hash, KeyType::Hash), (&t.range, KeyType::Range)] {
        let definition = AttributeDefinition::builder().attribute_name(*attr).attribute_type(ty.clone()).build();
        let key = KeySchemaElement::builder().attribute_name(*attr).key_type(key_type).build();
        let (Ok(definition), Ok(key)) = (definition, key) else {
            return Err(Error::internal(format!("cannot build the key schema of table {}", t.name)));
        };
        req = req.attribute_definitions(definition).key_schema(key);
    }
    match req.send().await {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.as_service_error(), Some(CreateTableError::ResourceInUseException(_))) => Ok(false),
        Err(e) => Err(unavailable(&format!("dynamodb CreateTable {}", t.name), &e).into()),
    }
}

/// Describes the table and checks its key schema.
async fn describe(clients: &Clients, t: &TableSpec) -> Result<TableDescription, Error> {
    let out = match clients.ddb.describe_table().table_name(&t.name).send().await {
        Ok(out) => out,
        Err(e) => {
            return Err(unavailable(&format!("dynamodb DescribeTable {}", t.name), &e).into());
        }
    };
    let table = out
        .table
        .ok_or_else(|| Error::unavailable(format!("dynamodb DescribeTable {}: no table description", t.name)))?;
    // A table of that name made for something else must not be written to.
    for ((attr, ty), key_type) in [(&t.hash, KeyType::Hash), (&t.range, KeyType::Range)] {
        let key_ok = table.key_schema().iter().any(|k| *k.key_type() == key_type && k.attribute_name() == *attr);
        let type_ok =
            table.attribute_definitions().iter().any(|d| d.attribute_name() == *attr && d.attribute_type() == ty);
        if !(key_ok && type_ok) {
            return Err(Error::invalid(format!(
                "dynamodb table {} exists with another key schema: expected {} key {attr:?} of type {}",
                t.name,
                key_type.as_str(),
                ty.as_str()
            )));
        }
    }
    Ok(table)
}

async fn wait_active(clients: &Clients, t: &TableSpec) -> Result<(), Error> {
    let deadline = Instant::now() + TABLE_ACTIVE_WAIT;
    loop {
        let table = describe(clients, t).await?;
        if table.table_status() == Some(&TableStatus::Active) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::unavailable(format!(
                "dynamodb table {} is not active after {} s (status {:?})",
                t.name,
                TABLE_ACTIVE_WAIT.as_secs(),
                table.table_status()
            )));
        }
        tokio::time::sleep(TABLE_POLL).await;
    }
}

/// Whether the bucket exists and is ours to use.
async fn bucket_exists(clients: &Clients, bucket: &str) -> Result<bool, Error> {
    match clients.s3.head_bucket().bucket(bucket).send().await {
        Ok(_) => Ok(true),
        Err(e) if http_status(&e) == Some(404) => Ok(false),
        Err(e) if http_status(&e) == Some(403) => Err(Error::unavailable(format!(
            "s3 bucket {bucket} exists but this account may not use it \
             (another account owns it, or s3:ListBucket is not allowed)"
        ))),
        Err(e) => Err(unavailable(&format!("s3 HeadBucket {bucket}"), &e).into()),
    }
}

/// Creates the bucket; `false` if it already existed. Asks first, because S3 in us-east-1
/// answers 200 to creating a bucket one already owns, which would read as "created".
async fn create_bucket(clients: &Clients, bucket: &str, region: &str) -> Result<bool, Error> {
    if bucket_exists(clients, bucket).await? {
        return Ok(false);
    }
    let mut req = clients.s3.create_bucket().bucket(bucket);
    // us-east-1 is the default location and must not be named.
    if region != "us-east-1" {
        req = req.create_bucket_configuration(
            CreateBucketConfiguration::builder().location_constraint(BucketLocationConstraint::from(region)).build(),
        );
    }
    let e = match req.send().await {
        Ok(_) => return Ok(true),
        Err(e) => e,
    };
    match e.as_service_error() {
        Some(CreateBucketError::BucketAlreadyOwnedByYou(_)) => Ok(false),
        // Created meanwhile by a concurrent init (ours), or the name belongs to another
        // account (then HeadBucket fails with 403).
        Some(CreateBucketError::BucketAlreadyExists(_)) => {
            if bucket_exists(clients, bucket).await? {
                Ok(false)
            } else {
                Err(Error::unavailable(format!("s3 bucket name {bucket} is taken by another account")))
            }
        }
        _ => Err(unavailable(&format!("s3 CreateBucket {bucket}"), &e).into()),
    }
}
