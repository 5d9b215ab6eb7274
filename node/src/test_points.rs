//! Test-only hooks (crash, failure and pause points) that process tests switch on through
//! environment variables; every one is compiled out of release builds.

use ampstore_common::error::Error;

/// Test-only crash points (`AMPSTORE_TEST_CRASH_AT=split:<point>` or `merge:<point>`);
/// compiled out of release builds.
pub fn crash_point(name: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("AMPSTORE_TEST_CRASH_AT").is_ok_and(|v| v == name) {
        eprintln!("ampstore: test crash point {name} reached: aborting");
        std::process::abort();
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}

/// Test-only failure points (`AMPSTORE_TEST_FAIL_ONCE_AT=merge:<point>`): the first time
/// the process reaches the point it returns an `Unavailable` error; compiled out of
/// release builds.
pub fn fail_once(name: &str) -> Result<(), Error> {
    #[cfg(debug_assertions)]
    {
        static FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if std::env::var("AMPSTORE_TEST_FAIL_ONCE_AT").is_ok_and(|v| v == name)
            && !FAILED.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            tracing::warn!(point = name, "test failure point reached: failing once");
            return Err(Error::unavailable(format!("test failure point {name}")));
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
    Ok(())
}

/// Test-only failure points that fail several times (`AMPSTORE_TEST_FAIL_AT=<point>:<times>`):
/// the first `times` times the process reaches the point it returns an `Unavailable` error
/// (a transient store failure); compiled out of release builds.
pub fn fail_times(name: &str) -> Result<(), Error> {
    #[cfg(debug_assertions)]
    {
        static FAILED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let times = std::env::var("AMPSTORE_TEST_FAIL_AT").ok().and_then(|v| {
            let (point, times) = v.rsplit_once(':')?;
            (point == name).then(|| times.parse::<u64>().ok()).flatten()
        });
        if let Some(times) = times
            && FAILED.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < times
        {
            tracing::warn!(point = name, "test failure point reached: failing");
            return Err(Error::unavailable(format!("test failure point {name}")));
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
    Ok(())
}

/// Test-only pause points (`AMPSTORE_TEST_PAUSE_AT=<point>:<ms>`): the first time the
/// process reaches the point it waits that long (say, between a durable append and its
/// answer); compiled out of release builds.
pub async fn pause_once(name: &str) {
    #[cfg(debug_assertions)]
    {
        static PAUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        let ms = std::env::var("AMPSTORE_TEST_PAUSE_AT").ok().and_then(|v| {
            let (point, ms) = v.rsplit_once(':')?;
            (point == name).then(|| ms.parse::<u64>().ok()).flatten()
        });
        if let Some(ms) = ms
            && !PAUSED.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            tracing::warn!(point = name, ms, "test pause point reached: waiting");
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}
