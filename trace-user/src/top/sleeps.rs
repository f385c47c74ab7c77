//! Time asleep on a full send buffer per socket and interval (`top --full`), from the
//! sleeps' start and end events. A sleep still going on at a refresh counts up to it: a
//! writer stuck on a peer that never reads shows asleep the whole interval, not nothing
//! until it wakes.

use std::collections::HashMap;

use trace_common::BlockEvent;

#[derive(Default)]
pub struct Sleeps {
    /// Threads asleep now: (socket, when the sleep began).
    asleep: HashMap<u32, (u64, u64)>,
    /// Nanoseconds asleep in the interval, by socket.
    interval: HashMap<u64, u64>,
    /// The interval's start (CLOCK_MONOTONIC, as the events' times).
    since_ns: u64,
    /// Who slept on each socket (pid, comm): a writer stuck since before `top` started has
    /// no other event to name its socket's row.
    pub who: HashMap<u64, (u32, String)>,
}

impl Sleeps {
    pub fn new(now_ns: u64) -> Self {
        Self {
            since_ns: now_ns,
            ..Self::default()
        }
    }

    pub fn started(&mut self, e: &BlockEvent) {
        self.asleep.insert(e.hdr.tid, (e.hdr.sock_id, e.start_ns));
        self.who.insert(
            e.hdr.sock_id,
            (e.hdr.pid, crate::format::comm_str(&e.comm).to_owned()),
        );
    }

    pub fn ended(&mut self, e: &BlockEvent) {
        self.asleep.remove(&e.hdr.tid);
        self.add(e.hdr.sock_id, e.start_ns, e.end_ns);
    }

    /// The part of a sleep from `start` to `end` inside the interval.
    fn add(&mut self, sock: u64, start: u64, end: u64) {
        let ns = end.saturating_sub(start.max(self.since_ns));
        *self.interval.entry(sock).or_default() += ns;
    }

    /// Ends the interval at `now_ns`: each socket's time asleep in it.
    pub fn take(&mut self, now_ns: u64) -> HashMap<u64, u64> {
        let ongoing: Vec<(u64, u64)> = self.asleep.values().copied().collect();
        for (sock, start) in ongoing {
            self.add(sock, start, now_ns);
        }
        self.since_ns = now_ns;
        let asleep: std::collections::HashSet<u64> =
            self.asleep.values().map(|&(sock, _)| sock).collect();
        self.who.retain(|sock, _| asleep.contains(sock));
        std::mem::take(&mut self.interval)
    }
}

#[cfg(test)]
mod tests {
    use trace_common::{BlockEvent, Header, SendQueue};

    use super::Sleeps;

    fn ev(tid: u32, sock: u64, start: u64, end: u64) -> BlockEvent {
        BlockEvent {
            hdr: Header {
                tid,
                sock_id: sock,
                ..Header::default()
            },
            comm: [0; 16],
            start_ns: start,
            end_ns: end,
            left: 0,
            queue: SendQueue::default(),
            stacks: trace_common::StackIds::NONE,
        }
    }

    #[test]
    fn sleeps_count_inside_the_interval_only() {
        let mut s = Sleeps::new(1_000);
        s.started(&ev(7, 1, 500, 0));
        s.started(&ev(8, 2, 1_500, 0));
        s.ended(&ev(8, 2, 1_500, 1_800));
        let got = s.take(2_000);
        assert_eq!(
            got[&1], 1_000,
            "asleep since before the interval, still asleep"
        );
        assert_eq!(got[&2], 300);
        s.ended(&ev(7, 1, 500, 2_500));
        assert_eq!(s.take(3_000)[&1], 500);
        assert!(s.take(4_000).is_empty());
    }
}
