//! `top`'s screen (ratatui on crossterm): the rows of the last refresh, keys to sort,
//! filter, freeze and look at one socket. The terminal is restored when the screen is
//! dropped, on any return, and by ratatui's panic hook on a panic.

use std::collections::{HashMap, VecDeque};

use anyhow::Context as _;
use crossterm::event::{Event, EventStream, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use futures_util::StreamExt as _;
use ratatui::{
    DefaultTerminal, Frame,
    layout::{Alignment, Constraint, Layout},
    style::{Modifier, Style},
    text::Line,
    widgets::{Block, Borders, Cell, Paragraph, Row as TableRow, Table, TableState},
};

use super::{Engine, Row, Snapshot, SortBy, cells};
use crate::{cli::TopArgs, stop};

/// The terminal in raw mode on the alternate screen, for as long as this lives.
struct Screen(DefaultTerminal);

impl Screen {
    fn new() -> Self {
        // Raw mode, alternate screen, and a panic hook that restores both first.
        Self(ratatui::init())
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// Refreshes of one socket kept for its detail view.
const HISTORY: usize = 10;

/// What the keys change.
struct View {
    sort: SortBy,
    reverse: bool,
    frozen: bool,
    /// Rows whose pid, comm or a port matches; `editing`: being typed.
    filter: String,
    editing: bool,
    table: TableState,
    /// The socket whose detail is shown.
    detail: Option<u64>,
    history: HashMap<u64, VecDeque<Row>>,
}

impl View {
    fn shows(&self, r: &Row) -> bool {
        let f = self.filter.trim();
        f.is_empty()
            || r.pid.to_string() == f
            || r.comm.contains(f)
            || r.laddr.ends_with(&format!(":{f}"))
            || r.raddr.ends_with(&format!(":{f}"))
    }

    fn remember(&mut self, snap: &Snapshot) {
        self.history
            .retain(|id, _| snap.rows.iter().any(|r| r.sock_id == *id));
        for r in &snap.rows {
            let h = self.history.entry(r.sock_id).or_default();
            if h.len() == HISTORY {
                h.pop_front();
            }
            h.push_back(r.clone());
        }
    }

    /// Applies a key; `false`: quit.
    fn key(&mut self, k: KeyEvent, shown: &[&Row]) -> bool {
        if self.editing {
            match k.code {
                KeyCode::Enter | KeyCode::Esc => self.editing = false,
                KeyCode::Backspace => drop(self.filter.pop()),
                KeyCode::Char(c) => self.filter.push(c),
                _ => {}
            }
            return true;
        }
        match k.code {
            KeyCode::Char('q') => return false,
            KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => return false,
            KeyCode::Char('s') => self.sort = self.sort.step(false),
            KeyCode::Char('S') => self.sort = self.sort.step(true),
            KeyCode::Char('r') => self.reverse = !self.reverse,
            KeyCode::Char(' ') => self.frozen = !self.frozen,
            KeyCode::Char('/') => {
                self.filter.clear();
                self.editing = true;
            }
            KeyCode::Down | KeyCode::Char('j') => self.table.select_next(),
            KeyCode::Up | KeyCode::Char('k') => self.table.select_previous(),
            KeyCode::Enter => {
                self.detail = match self.detail {
                    Some(_) => None,
                    None => self
                        .table
                        .selected()
                        .and_then(|i| shown.get(i))
                        .map(|r| r.sock_id),
                }
            }
            KeyCode::Esc => self.detail = None,
            _ => {}
        }
        true
    }
}

pub async fn run(mut engine: Engine, args: &TopArgs) -> anyhow::Result<()> {
    engine.keep_recent();
    let mut screen = Screen::new();
    let mut keys = EventStream::new();
    let stop = stop::stop_on(None, std::future::pending());
    tokio::pin!(stop);
    let mut view = View {
        sort: args.sort,
        reverse: false,
        frozen: false,
        filter: String::new(),
        editing: false,
        table: TableState::default(),
        detail: None,
        history: HashMap::new(),
    };
    let mut snap: Option<Snapshot> = None;
    let mut refreshes = 0;
    loop {
        if let Some(s) = &snap {
            let events = view.detail.map(|id| engine.recent(id)).unwrap_or_default();
            screen
                .0
                .draw(|f| draw(f, s, &mut view, &events))
                .context("drawing the screen")?;
        }
        tokio::select! {
            r = engine.until_refresh() => {
                r?;
                let fresh = engine.refresh(view.sort, view.reverse)?;
                view.remember(&fresh);
                if !view.frozen || snap.is_none() {
                    snap = Some(fresh);
                }
                refreshes += 1;
                if args.iterations.is_some_and(|n| refreshes >= n) {
                    break;
                }
            }
            k = keys.next() => match k {
                Some(Ok(Event::Key(k))) if k.kind == KeyEventKind::Press => {
                    let rows = snap.as_ref().map(|s| s.rows.iter().filter(|r| view.shows(r)).collect::<Vec<_>>()).unwrap_or_default();
                    if !view.key(k, &rows) {
                        break;
                    }
                    if let Some(s) = &mut snap {
                        view.sort.sort(&mut s.rows, view.reverse);
                        s.sort = view.sort;
                    }
                }
                Some(Ok(_)) => {} // a resize: the next draw fits the new size
                Some(Err(e)) => return Err(e).context("reading the keyboard"),
                None => break,
            },
            () = &mut stop => break,
        }
    }
    Ok(())
}

fn draw(f: &mut Frame, s: &Snapshot, view: &mut View, events: &[String]) {
    let [status, totals, body, help] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(f.area());
    let title = cells::COLUMNS
        .iter()
        .find(|c| c.sort == Some(view.sort))
        .map_or("?", |c| c.title);
    f.render_widget(
        Paragraph::new(format!(
            "sockbuf top - every {:.1}s - sort {}{} - lost {} faults {} missed {} - {}{}{}{}",
            s.interval_s,
            title,
            if view.reverse { " (reversed)" } else { "" },
            s.lost,
            s.faults,
            s.missed,
            s.attach,
            if s.full { " --full" } else { "" },
            if view.frozen { " - FROZEN" } else { "" },
            if view.filter.is_empty() && !view.editing {
                String::new()
            } else {
                format!(
                    " - filter: {}{}",
                    view.filter,
                    if view.editing { "_" } else { "" }
                )
            },
        ))
        .style(Style::new().add_modifier(Modifier::REVERSED)),
        status,
    );
    f.render_widget(Paragraph::new(cells::totals(&s.totals)), totals);
    let shown: Vec<&Row> = s.rows.iter().filter(|r| view.shows(r)).collect();
    match view.detail.and_then(|id| view.history.get(&id)) {
        Some(h) => f.render_widget(detail(h, events), body),
        None => f.render_stateful_widget(table(&shown, view.sort), body, &mut view.table),
    }
    f.render_widget(
        Paragraph::new(
            "q quit  s/S sort  r reverse  / filter  space freeze  up/down select  enter detail",
        ),
        help,
    );
}

fn table<'a>(rows: &[&'a Row], sort: SortBy) -> Table<'a> {
    let header = TableRow::new(cells::COLUMNS.iter().map(|c| {
        let style = if c.sort == Some(sort) {
            Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
        } else {
            Style::new().add_modifier(Modifier::BOLD)
        };
        aligned(c, c.title.to_owned()).style(style)
    }));
    let body = rows.iter().map(|r| {
        let row = TableRow::new(cells::COLUMNS.iter().map(|c| aligned(c, c.cell(r))));
        // A closed socket's row fades out over its last refreshes.
        if r.closed_ago.is_some() {
            row.style(Style::new().add_modifier(Modifier::DIM))
        } else {
            row
        }
    });
    Table::new(
        body,
        cells::COLUMNS.iter().map(|c| Constraint::Length(c.width)),
    )
    .header(header)
    .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
}

/// A cell as its column aligns it: text left, figures right.
fn aligned(c: &cells::Column, text: String) -> Cell<'static> {
    let line = Line::from(text);
    Cell::from(if c.left() {
        line
    } else {
        line.alignment(Alignment::Right)
    })
}

/// One socket: its last refreshes and its last events, newest last.
fn detail(h: &VecDeque<Row>, events: &[String]) -> Paragraph<'static> {
    let last = h.back().expect("a socket's history holds its rows");
    let mut lines = vec![
        Line::from(format!(
            "{} (pid {}) {} -> {}  {}  socket {}",
            last.comm, last.pid, last.laddr, last.raddr, last.state, last.sock_id
        )),
        Line::from(format!(
            "since top started: sent {} B in {} calls ({} EAGAIN), received {} B, {} RSTs",
            last.sent_bytes, last.sends, last.eagain, last.received_bytes, last.rsts
        )),
        Line::from(""),
        Line::from(cells::header()),
    ];
    lines.extend(h.iter().map(|r| Line::from(cells::row(r))));
    lines.push(Line::from(""));
    if events.is_empty() {
        lines.push(Line::from(
            "no events (calls are counted, not streamed: state changes, RSTs, FINs, errors and, with --full, sleeps are events)",
        ));
    } else {
        lines.push(Line::from("last events:"));
        lines.extend(events.iter().map(|e| Line::from(e.clone())));
    }
    Paragraph::new(lines).block(
        Block::new()
            .borders(Borders::TOP)
            .title("recent refreshes and events (enter or esc: back)"),
    )
}
