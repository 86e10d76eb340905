//! Polling, for servers without RFC 4533 (or an identity that may not use it): every
//! `poll_interval_secs`, a paged search for entries whose `modifyTimestamp` is at or after
//! the last poll's start minus a margin for clock skew, applied per entry (keyed by
//! `entryUUID`, so a rename moves the entry); every `full_refresh_secs`, a full load that
//! replaces the mirror atomically (deletions, and whatever the deltas missed).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ldap3::Ldap;
use tracing::{debug, warn};

use crate::mirror::load::{self, key_of};
use crate::mirror::{Kind, Mirror};

/// Entries changed up to this long before the last poll began are asked for again (clock
/// skew between this node and the server, and changes committed during the last poll).
const MARGIN: Duration = Duration::from_secs(60);

/// `YYYYMMDDHHMMSSZ` for a time (LDAP generalized time, UTC).
pub fn generalized_time(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!(
        "{y:04}{mo:02}{d:02}{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Polls until the connection fails. `since`: when the mirror was last known current (the
/// start of the load it holds, or its last successful sync before a restart), so that the
/// first poll picks up what changed meanwhile.
pub async fn run(m: &Arc<Mirror>, ldap: Ldap, since: SystemTime) -> Result<(), String> {
    let every = Duration::from_secs(m.cfg.poll_interval_secs);
    let full_every = Duration::from_secs(m.cfg.full_refresh_secs);
    let mut last_full = Instant::now();
    let mut since = since;
    loop {
        tokio::time::sleep(every).await;
        if last_full.elapsed() >= full_every {
            let state = load::full(m, ldap.clone()).await?;
            m.swap(state);
            m.synced();
            last_full = Instant::now();
            since = SystemTime::now();
            debug!("poll: full reconciliation swapped in");
            continue;
        }
        let started = SystemTime::now();
        let ts = generalized_time(since.checked_sub(MARGIN).unwrap_or(UNIX_EPOCH));
        for kind in [Kind::User, Kind::Group] {
            let (_, filter) = load::scope(m, kind);
            let f = format!("(&{filter}(modifyTimestamp>={ts}))");
            let entries = load::search(m, &ldap, kind, &f).await?;
            if entries.is_empty() {
                continue;
            }
            let n = entries.len();
            m.apply(|s, mapper| {
                for e in entries {
                    let key = key_of(&e);
                    let dn = e.dn.clone();
                    if let Err(why) = s.upsert(mapper, kind, &key, e) {
                        s.remove(kind, &key);
                        warn!(%dn, reason = %why, "mirror: skipped entry");
                    }
                }
            });
            debug!(entries = n, "poll: changes applied");
        }
        since = started;
        m.synced();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generalized_time_is_utc() {
        assert_eq!(generalized_time(UNIX_EPOCH), "19700101000000Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(generalized_time(t), "20261118110640Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(generalized_time(leap), "20000229000000Z");
    }
}
