//! The last events each socket streamed (state changes, RSTs, FINs, errors other than
//! EAGAIN; with `--full` also its sleeps), as `trace` prints them, for the screen's detail
//! view. Counted calls are not events: they show as the rows' rates.

use std::{
    cell::RefCell,
    collections::{HashMap, HashSet, VecDeque},
    io::Write,
    rc::Rc,
};

use trace_common::user::Event;

use crate::{output, session::EventHandler, trace::Printer};

/// Events kept per socket.
const KEEP: usize = 12;

/// A `Write` whose bytes the owner takes back after each event.
#[derive(Clone, Default)]
struct Shared(Rc<RefCell<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub struct Recent {
    printer: Printer,
    lines: Shared,
    by_sock: HashMap<u64, VecDeque<String>>,
}

impl Recent {
    pub fn new(t0_ns: u64) -> Self {
        let lines = Shared::default();
        Self {
            printer: Printer::new(output::new_output(
                false,
                Box::new(lines.clone()),
                t0_ns,
                false,
            )),
            lines,
            by_sock: HashMap::new(),
        }
    }

    /// Socket `id`'s last events, oldest first.
    pub fn of(&self, id: u64) -> impl Iterator<Item = &str> {
        self.by_sock
            .get(&id)
            .into_iter()
            .flatten()
            .map(String::as_str)
    }

    /// Forgets sockets not in `live` (called at each refresh: memory stays bounded).
    pub fn keep(&mut self, live: &HashSet<u64>) {
        self.by_sock.retain(|id, _| live.contains(id));
    }
}

impl EventHandler for Recent {
    fn on_event(&mut self, ev: &Event) {
        self.printer.on_event(ev);
        // Each event's lines are handed over at once (events here are rare).
        let _ = self.printer.out.flush();
        let text = std::mem::take(&mut *self.lines.0.borrow_mut());
        let q = self.by_sock.entry(ev.header().sock_id).or_default();
        for line in String::from_utf8_lossy(&text).lines() {
            if q.len() == KEEP {
                q.pop_front();
            }
            q.push_back(line.trim_end().to_owned());
        }
    }
}
