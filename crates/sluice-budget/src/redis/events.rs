//! What replicas tell each other at once over one pub/sub channel: a key cooling down after a 429 (or
//! taken out after a 401), a virtual key revoked, tenants changed. One subscription per process; a
//! message names the replica that sent it, which ignores its own.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::Inner;
use crate::Announcement;

/// One message on the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// The rate budget `name` cools down for `pause` from now.
    Cooldown { name: Box<str>, pause: Duration },
    /// A change to keys or tenants.
    Announced(Announcement),
}

/// A message: the kind, the sender's id, then the kind's fields, separated by tabs (names and ids have
/// none: budget names are built from configured names and key ids, which the store makes).
pub(crate) fn encode(origin: &str, event: &Event) -> String {
    match event {
        Event::Cooldown { name, pause } => format!("cool\t{origin}\t{}\t{name}", pause.as_millis()),
        Event::Announced(Announcement::KeyRevoked(id)) => format!("revoke\t{origin}\t{id}"),
        Event::Announced(Announcement::TenantsChanged) => format!("tenants\t{origin}"),
    }
}

/// Reads a message into its sender and event; `None` for anything else.
pub(crate) fn decode(message: &str) -> Option<(&str, Event)> {
    let mut fields = message.splitn(4, '\t');
    let kind = fields.next()?;
    let origin = fields.next()?;
    let event = match kind {
        "cool" => {
            let millis: u64 = fields.next()?.parse().ok()?;
            Event::Cooldown {
                name: fields.next()?.into(),
                pause: Duration::from_millis(millis),
            }
        }
        "revoke" => Event::Announced(Announcement::KeyRevoked(Arc::from(fields.next()?))),
        "tenants" => Event::Announced(Announcement::TenantsChanged),
        _ => return None,
    };
    Some((origin, event))
}

/// Listens on the channel for as long as the budgets live, subscribing again after each loss. After a
/// gap, announcements may have been missed, so the replica is told to read tenants and keys again;
/// cooldowns missed in a gap come back with the next lease.
pub(crate) async fn listen(inner: Arc<Inner>) {
    let link = &inner.link;
    let mut subscribed_before = false;
    loop {
        let subscription = async {
            let mut pubsub = link.client().get_async_pubsub().await?;
            pubsub.subscribe(&link.channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(link.settings.connect_timeout, subscription).await {
            Ok(Ok(mut pubsub)) => {
                if subscribed_before {
                    let _ = link.announcements.send(Announcement::TenantsChanged);
                }
                subscribed_before = true;
                let mut messages = pubsub.on_message();
                while let Some(message) = messages.next().await {
                    let payload = message.get_payload_bytes();
                    let Some((origin, event)) = std::str::from_utf8(payload).ok().and_then(decode) else {
                        continue;
                    };
                    if origin == link.id {
                        continue;
                    }
                    match event {
                        Event::Cooldown { name, pause } => inner.cooled_elsewhere(&name, pause),
                        Event::Announced(change) => {
                            let _ = link.announcements.send(change);
                        }
                    }
                }
                tracing::debug!("the Redis subscription ended; subscribing again");
            }
            Ok(Err(err)) => tracing::debug!(error = %err, "cannot subscribe to Redis events yet"),
            Err(_) => tracing::debug!("cannot subscribe to Redis events yet: no answer in time"),
        }
        tokio::time::sleep(link.settings.heartbeat).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_anything_else_is_ignored() {
        let events = [
            Event::Cooldown {
                name: "key/m/0/up#0".into(),
                pause: Duration::from_millis(1500),
            },
            Event::Announced(Announcement::KeyRevoked(Arc::from("key_01H"))),
            Event::Announced(Announcement::TenantsChanged),
        ];
        for event in events {
            let message = encode("a1", &event);
            assert_eq!(decode(&message), Some(("a1", event)), "{message}");
        }
        assert_eq!(decode("cool\ta1\tsoon\tkey"), None);
        assert_eq!(decode("hello"), None);
        assert_eq!(decode(""), None);
    }
}
