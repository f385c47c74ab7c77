//! The summary's in-kernel counts: AGG (per CPU and per socket), PENDING (each socket's
//! writes waiting for an ACK) and, on BTF-typed hooks, the counts established sockets keep
//! themselves ([`SkCounts`]), which the kernel adds to AGG at their CLOSE. A socket's
//! entries are taken out when it closes, so the kernel's maps hold live sockets only.

use std::collections::BTreeMap;

use anyhow::Context as _;
use aya::maps::{HashMap, MapData, PerCpuHashMap};
use trace_common::agg::{KEPT_FOLDED, KEPT_LIVE, Pending, SockAgg};

use super::sk_kept::SkCounts;

pub struct KernelCounts {
    agg: PerCpuHashMap<MapData, u64, SockAgg>,
    /// `--full` only: reading it costs a 48 KiB buffer per look-up, even for a miss.
    pending: Option<HashMap<MapData, u64, Pending>>,
    /// Where sockets keep their counts themselves (BTF-typed hooks without `--full`).
    sk: Option<SkCounts>,
}

/// One socket's counts on every CPU, and its waiting writes.
pub struct Taken {
    pub per_cpu: Vec<SockAgg>,
    pub waiting: Option<Pending>,
}

impl Taken {
    /// Whether the socket kept counts itself (live, or added to AGG at its CLOSE).
    pub fn kept(&self) -> bool {
        self.per_cpu.iter().any(|a| a.kept != 0)
    }
}

impl KernelCounts {
    pub fn new(
        agg: PerCpuHashMap<MapData, u64, SockAgg>,
        pending: Option<HashMap<MapData, u64, Pending>>,
        sk: Option<SkCounts>,
    ) -> Self {
        Self { agg, pending, sk }
    }

    /// The counts live sockets keep themselves, one more "CPU" each beside AGG's, by id.
    fn kept(&self) -> anyhow::Result<BTreeMap<u64, SockAgg>> {
        let Some(sk) = &self.sk else {
            return Ok(BTreeMap::new());
        };
        Ok(sk
            .read()?
            .into_iter()
            .map(|mut v| {
                v.agg.kept = KEPT_LIVE;
                (v.id, v.agg)
            })
            .collect())
    }

    /// Takes socket `id`'s entries out of the maps (none: nothing was counted for it).
    pub fn take(&mut self, id: u64) -> Taken {
        let per_cpu = self
            .agg
            .get(&id, 0)
            .map(|v| v.iter().copied().collect())
            .unwrap_or_default();
        // Absent: nothing to remove. The kernel settled and freed its waiting writes at
        // the close (PENDING is read only at the end, for live sockets).
        let _ = self.agg.remove(&id);
        Taken {
            per_cpu,
            waiting: None,
        }
    }

    /// Every socket still in the maps, at the end: (id, its counts), by id.
    pub fn all(&self) -> anyhow::Result<std::collections::BTreeMap<u64, Taken>> {
        let mut out = BTreeMap::new();
        for (id, per_cpu) in self.counted()? {
            out.insert(
                id,
                Taken {
                    per_cpu,
                    waiting: None,
                },
            );
        }
        for entry in self.pending.iter().flat_map(|p| p.iter()) {
            let (id, p) = entry.context("reading the PENDING map")?;
            out.entry(id)
                .or_insert_with(|| Taken {
                    per_cpu: Vec::new(),
                    waiting: None,
                })
                .waiting = Some(p);
        }
        Ok(out)
    }

    /// Every socket's counts on every CPU, read and left in place (`top`).
    pub fn counted(&self) -> anyhow::Result<Vec<(u64, Vec<SockAgg>)>> {
        // Read before AGG: a socket whose CLOSE adds its counts to AGG between the two reads
        // is then found in both, its AGG entry marked [`KEPT_FOLDED`], and its kept counts
        // dropped.
        let mut kept = self.kept()?;
        let mut out = Vec::new();
        for e in self.agg.iter() {
            let (id, per_cpu) = e.context("reading the AGG map")?;
            let mut per_cpu: Vec<SockAgg> = per_cpu.iter().copied().collect();
            let k = kept.remove(&id);
            if !per_cpu.iter().any(|a| a.kept == KEPT_FOLDED) {
                per_cpu.extend(k);
            }
            out.push((id, per_cpu));
        }
        out.extend(kept.into_iter().map(|(id, k)| (id, vec![k])));
        Ok(out)
    }

    /// Sockets counted in the kernel right now.
    pub fn live(&self) -> anyhow::Result<usize> {
        let mut ids: std::collections::BTreeSet<u64> = self.kept()?.into_keys().collect();
        ids.extend(self.agg.keys().filter_map(Result::ok));
        Ok(ids.len())
    }
}
