//! `ampstore init`: create what the configured backend needs.

use ampstore_server::config::BackendKind;
use ampstore_store::local::{BLOB_DIR, DB_FILE, LocalStore};
use clap::Args;

use crate::settings::{self, BackendArgs, SettingsArgs};

#[derive(Args)]
pub struct InitArgs {
    #[command(flatten)]
    backend: BackendArgs,
}

pub async fn run(settings: &SettingsArgs, args: InitArgs) -> anyhow::Result<()> {
    let cfg = settings::load(settings, &args.backend)?;
    match cfg.backend.kind {
        BackendKind::Local => {
            let dir = cfg.local_dir();
            LocalStore::open(&dir, &cfg.backend.local)?;
            println!("local store ready: {} and {}", dir.join(DB_FILE).display(), dir.join(BLOB_DIR).display());
            Ok(())
        }
        BackendKind::Aws => init_aws(&cfg).await,
    }
}

#[cfg(feature = "aws")]
async fn init_aws(cfg: &ampstore_server::config::Config) -> anyhow::Result<()> {
    let report = ampstore_store::aws::AwsStore::init(&cfg.backend.aws).await?;
    println!("{report}");
    Ok(())
}

#[cfg(not(feature = "aws"))]
async fn init_aws(_cfg: &ampstore_server::config::Config) -> anyhow::Result<()> {
    anyhow::bail!("this build has no AWS backend: rebuild with `--features aws`")
}
