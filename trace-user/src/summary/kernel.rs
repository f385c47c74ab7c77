//! The summary's in-kernel counts: AGG (per CPU and per socket) and PENDING (each socket's
//! writes waiting for an ACK). A socket's entries are taken out when it closes, so the
//! kernel's maps hold live sockets only.

use anyhow::Context as _;
use aya::maps::{HashMap, MapData, PerCpuHashMap};
use trace_common::agg::{Pending, SockAgg};

pub struct KernelCounts {
    agg: PerCpuHashMap<MapData, u64, SockAgg>,
    /// `--full` only: reading it costs a 48 KiB buffer per look-up, even for a miss.
    pending: Option<HashMap<MapData, u64, Pending>>,
}

/// One socket's counts on every CPU, and its waiting writes.
pub struct Taken {
    pub per_cpu: Vec<SockAgg>,
    pub waiting: Option<Pending>,
}

impl KernelCounts {
    pub fn new(
        agg: PerCpuHashMap<MapData, u64, SockAgg>,
        pending: Option<HashMap<MapData, u64, Pending>>,
    ) -> Self {
        Self { agg, pending }
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
        let mut out = std::collections::BTreeMap::new();
        for entry in self.agg.iter() {
            let (id, per_cpu) = entry.context("reading the AGG map")?;
            out.insert(
                id,
                Taken {
                    per_cpu: per_cpu.iter().copied().collect(),
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
        self.agg
            .iter()
            .map(|e| {
                let (id, per_cpu) = e.context("reading the AGG map")?;
                Ok((id, per_cpu.iter().copied().collect()))
            })
            .collect()
    }

    /// Sockets counted in the kernel right now.
    pub fn live(&self) -> usize {
        self.agg.keys().count()
    }
}
