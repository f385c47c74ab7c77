//! Closed sockets, bounded: the `--top` N largest keep their own rows, every other one is
//! folded into a group by command and service port, so the totals keep everything while
//! memory stays flat however many connections come and go.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::Serialize;

use super::counts::{Counts, Side, SockSummary, TopBy};

/// What closed sockets are grouped by.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct GroupKey {
    pub comm: String,
    pub side: Side,
    /// The service's port: local for a server side, remote for a client side.
    pub port: u16,
}

impl GroupKey {
    pub fn of(s: &SockSummary) -> Self {
        let side = s.side();
        Self {
            comm: s.comm.clone(),
            side,
            port: match side {
                Side::Server => s.addrs.lport,
                Side::Client => s.addrs.rport,
            },
        }
    }

    /// Where sockets go once `--max-groups` groups exist.
    fn other() -> Self {
        Self {
            comm: "(other)".to_owned(),
            side: Side::Server,
            port: 0,
        }
    }
}

/// Closed sockets of one group.
#[derive(Clone, Debug, Serialize)]
pub struct Group {
    #[serde(flatten)]
    pub key: GroupKey,
    /// Sockets folded in.
    pub sockets: u64,
    #[serde(flatten)]
    pub counts: Counts,
}

/// Where a recently closed socket's late events go (a RST after the close, say).
#[derive(Clone, Debug)]
enum Place {
    Top,
    Group(GroupKey),
}

/// How many closed sockets are remembered for late events.
const RECENT: usize = 4096;

pub struct Closed {
    top: Vec<SockSummary>,
    top_n: usize,
    by: TopBy,
    groups: BTreeMap<GroupKey, Group>,
    max_groups: usize,
    /// Sockets folded into the `(other)` group because `--max-groups` groups existed.
    pub groups_over: u64,
    /// Sockets closed in all.
    pub closed: u64,
    recent: HashMap<u64, Place>,
    recent_order: VecDeque<u64>,
}

impl Closed {
    pub fn new(top_n: usize, by: TopBy, max_groups: usize) -> Self {
        Self {
            top: Vec::new(),
            top_n,
            by,
            groups: BTreeMap::new(),
            max_groups: max_groups.max(1),
            groups_over: 0,
            closed: 0,
            recent: HashMap::new(),
            recent_order: VecDeque::new(),
        }
    }

    /// A socket that reached CLOSE, with everything counted for it.
    pub fn add(&mut self, s: SockSummary) {
        self.closed += 1;
        let id = s.sock_id;
        let rank = s.counts.rank(self.by);
        let place = if self.top.len() < self.top_n {
            self.top.push(s);
            Place::Top
        } else if let Some((i, low)) = self.lowest()
            && rank > low
        {
            let out = std::mem::replace(&mut self.top[i], s);
            let key = self.fold(&out);
            self.remember(out.sock_id, Place::Group(key));
            Place::Top
        } else {
            Place::Group(self.fold(&s))
        };
        self.remember(id, place);
    }

    /// A closed socket past `--max-sockets`: its events already went to its group; `s`
    /// holds what the kernel counted for it.
    pub fn add_untracked(&mut self, s: &SockSummary) {
        self.closed += 1;
        let key = self.fold(s);
        self.remember(s.sock_id, Place::Group(key));
    }

    fn lowest(&self) -> Option<(usize, u64)> {
        self.top
            .iter()
            .enumerate()
            .map(|(i, s)| (i, s.counts.rank(self.by)))
            .min_by_key(|&(_, r)| r)
    }

    /// Folds a socket into its group; returns the group's key.
    fn fold(&mut self, s: &SockSummary) -> GroupKey {
        let g = self.group(GroupKey::of(s));
        g.sockets += 1;
        g.counts.merge(&s.counts);
        g.key.clone()
    }

    /// The group of `key`, or `(other)` when `--max-groups` are taken.
    fn group(&mut self, mut key: GroupKey) -> &mut Group {
        if !self.groups.contains_key(&key) && self.groups.len() >= self.max_groups {
            self.groups_over += 1;
            key = GroupKey::other();
        }
        self.groups.entry(key.clone()).or_insert_with(|| Group {
            key,
            sockets: 0,
            counts: Counts::default(),
        })
    }

    fn remember(&mut self, id: u64, place: Place) {
        if self.recent.insert(id, place).is_none() {
            self.recent_order.push_back(id);
            if self.recent_order.len() > RECENT
                && let Some(old) = self.recent_order.pop_front()
            {
                self.recent.remove(&old);
            }
        }
    }

    /// The counts a late event of closed socket `id` belongs to, if it closed recently.
    pub fn late(&mut self, id: u64) -> Option<&mut Counts> {
        match self.recent.get(&id)? {
            Place::Top => self
                .top
                .iter_mut()
                .find(|s| s.sock_id == id)
                .map(|s| &mut s.counts),
            Place::Group(key) => {
                let key = key.clone();
                self.groups.get_mut(&key).map(|g| &mut g.counts)
            }
        }
    }

    /// The group counts that events of a socket past `--max-sockets` go to directly.
    pub fn untracked(&mut self, s: &SockSummary) -> &mut Counts {
        &mut self.group(GroupKey::of(s)).counts
    }

    pub fn top(&self) -> impl Iterator<Item = &SockSummary> {
        self.top.iter()
    }

    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }
}

#[cfg(test)]
mod tests {
    use trace_common::SockAddrs;

    use super::*;

    fn sock(id: u64, bytes: u64, lport: u16, rport: u16) -> SockSummary {
        let mut s = SockSummary {
            sock_id: id,
            comm: "app".to_owned(),
            addrs: SockAddrs {
                lport,
                rport,
                ..SockAddrs::default()
            },
            ..SockSummary::default()
        };
        s.counts.copied_bytes = bytes;
        s.counts.sends = 1;
        s
    }

    #[test]
    fn keeps_the_largest_and_folds_the_rest_by_service_port() {
        let mut c = Closed::new(2, TopBy::Bytes, 10);
        for (id, bytes) in [(1, 10), (2, 500), (3, 50), (4, 1000), (5, 5)] {
            c.add(sock(id, bytes, 40000 + id as u16, 80));
        }
        let top: Vec<u64> = c.top().map(|s| s.sock_id).collect();
        assert_eq!(top.len(), 2);
        assert!(top.contains(&2) && top.contains(&4), "{top:?}");
        let groups: Vec<&Group> = c.groups().collect();
        assert_eq!(groups.len(), 1);
        assert_eq!((groups[0].key.port, groups[0].key.side), (80, Side::Client));
        assert_eq!((groups[0].sockets, groups[0].counts.copied_bytes), (3, 65));
        assert_eq!(c.closed, 5);
        // A late event of a folded socket lands in its group, of a kept one in its row.
        c.late(1).expect("remembered").rst_sent += 1;
        c.late(4).expect("remembered").rst_sent += 1;
        assert_eq!(c.groups().next().unwrap().counts.rst_sent, 1);
        assert_eq!(c.top().map(|s| s.counts.rst_sent).sum::<u64>(), 1);
    }

    #[test]
    fn groups_are_bounded() {
        let mut c = Closed::new(0, TopBy::Bytes, 2);
        for port in [80, 443, 8080, 9090] {
            c.add(sock(u64::from(port), 1, port, 50000));
        }
        assert_eq!(c.groups().count(), 3, "two groups and (other)");
        assert_eq!(c.groups_over, 2);
        let total: u64 = c.groups().map(|g| g.sockets).sum();
        assert_eq!(total, 4, "nothing lost");
    }
}
