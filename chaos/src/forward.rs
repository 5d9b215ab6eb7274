//! A TCP forwarder from the bridge address to a server that listens on loopback here (the
//! moto server of the AWS backend), so processes in their own network namespaces reach it.

use std::net::Ipv4Addr;

use tokio::net::{TcpListener, TcpStream};

/// Listens on `ip` (a free port) and forwards every connection to `target`; the address it
/// listens on. Runs until the runtime ends.
pub async fn start(ip: Ipv4Addr, target: String) -> anyhow::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind((ip, 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    Ok(addr)
}
