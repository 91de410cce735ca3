//! Where a reply to a command goes: the command's `ce_replyto` and `atoll_reply_partition`
//! headers, checked as bad input before the command is handled (a reply that cannot be
//! delivered would otherwise be retried forever, stalling the command's partition).
//!
//! [`ReplyTarget::parse`] checks the headers' form: `ce_replyto` names some service's
//! `private.reply` topic, `atoll_reply_partition` is a partition number (and comes with a
//! `ce_replyto`). [`ReplyTarget::fits`] checks them against the cluster: the topic exists and
//! has the partition. Both are pure; the worker asks the cluster.

use super::topic::{PrivateTopic, TopicName};

/// A command's reply address, its form checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReplyTarget<'a> {
    /// The reply topic.
    pub(crate) topic: &'a str,
    /// The partition named, if any.
    pub(crate) partition: Option<i32>,
}

impl<'a> ReplyTarget<'a> {
    /// The reply address of a record with these headers: `Ok(None)` when it asks for no
    /// reply; `Err` saying what is wrong with it.
    pub(crate) fn parse(
        reply_to: Option<&'a str>,
        partition: Option<&str>,
    ) -> Result<Option<Self>, String> {
        let Some(topic) = reply_to else {
            return match partition {
                Some(p) => Err(format!("atoll_reply_partition `{p}` without a ce_replyto")),
                None => Ok(None),
            };
        };
        let is_reply = topic
            .parse::<TopicName>()
            .is_ok_and(|t| t.private_kind() == Some(PrivateTopic::Reply));
        if !is_reply {
            return Err(format!(
                "ce_replyto `{topic}` is not a reply topic; replies go only to `<company>.<namespace>.<service>.private.reply`"
            ));
        }
        let partition =
            match partition {
                None => None,
                Some(p) => Some(p.parse::<i32>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                    format!("atoll_reply_partition `{p}` is not a partition number")
                })?),
            };
        Ok(Some(Self { topic, partition }))
    }

    /// Whether the address exists in a cluster where its topic has `partitions` (`None`: no
    /// such topic).
    pub(crate) fn fits(&self, partitions: Option<i32>) -> Result<(), String> {
        let topic = self.topic;
        match (partitions, self.partition) {
            (None, _) => Err(format!(
                "ce_replyto `{topic}` names a reply topic that does not exist"
            )),
            (Some(n), Some(p)) if p >= n => Err(format!(
                "atoll_reply_partition {p} is out of range: `{topic}` has {n} partition{}",
                if n == 1 { "" } else { "s" }
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPLY: &str = "acme.shop.orders.private.reply";

    #[test]
    fn the_headers_form_is_checked() {
        let ok = |partition| {
            Ok(Some(ReplyTarget {
                topic: REPLY,
                partition,
            }))
        };
        /// `ce_replyto`, `atoll_reply_partition`, the target or a part of the error.
        type Case<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            Result<Option<ReplyTarget<'a>>, &'a str>,
        );
        let cases: &[Case<'_>] = &[
            (None, None, Ok(None)),
            (Some(REPLY), None, ok(None)),
            (Some(REPLY), Some("2"), ok(Some(2))),
            (None, Some("2"), Err("without a ce_replyto")),
            (
                Some("acme.shop.orders.events"),
                None,
                Err("is not a reply topic"),
            ),
            (
                Some("acme.shop.orders.private.dlq"),
                None,
                Err("is not a reply topic"),
            ),
            (Some("not a topic"), None, Err("is not a reply topic")),
            (Some(REPLY), Some("-1"), Err("not a partition number")),
            (Some(REPLY), Some("two"), Err("not a partition number")),
        ];
        for (to, p, want) in cases {
            let got = ReplyTarget::parse(*to, *p);
            match (want, got) {
                (Ok(w), Ok(g)) => assert_eq!(&g, w, "{to:?} {p:?}"),
                (Err(part), Err(e)) => assert!(e.contains(part), "{to:?} {p:?}: {e}"),
                (w, g) => panic!("{to:?} {p:?}: wanted {w:?}, got {g:?}"),
            }
        }
    }

    #[test]
    fn the_address_must_exist_in_the_cluster() {
        let at = |partition| ReplyTarget {
            topic: REPLY,
            partition,
        };
        let cases = [
            (at(None), Some(1), Ok(())),
            (at(Some(0)), Some(1), Ok(())),
            (at(Some(3)), Some(4), Ok(())),
            (at(None), None, Err("does not exist")),
            (
                at(Some(1)),
                Some(1),
                Err("out of range: `acme.shop.orders.private.reply` has 1 partition"),
            ),
            (at(Some(99)), Some(6), Err("99 is out of range")),
        ];
        for (target, partitions, want) in cases {
            match (want, target.fits(partitions)) {
                (Ok(()), Ok(())) => {}
                (Err(part), Err(e)) => assert!(e.contains(part), "{target:?}: {e}"),
                (w, g) => panic!("{target:?} {partitions:?}: wanted {w:?}, got {g:?}"),
            }
        }
    }
}
