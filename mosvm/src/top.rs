//! `mosvm top`: the whole cluster at a glance, refreshed every second, in
//! the spirit of MOSIX's `mon`: one row per host with a load bar against
//! its capacity, the jobs of every home that answered, the latest moves
//! and why they were made. Not on a terminal (or with `--once`) it prints
//! one plain snapshot of the same tables; `--json` prints the
//! `ClusterView`.
//!
//! Everything shown is computed by pure functions of a `ClusterView`
//! (`snapshot` for text, `render` for the terminal), so both are tested
//! without a daemon.

use std::cmp::Reverse;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use mosvm_host::api::{ClusterView, Event, EventKind, HostMode, HostState, HostView, JobState, JobView, LoadView};
use mosvm_host::BlockingClient;

use crate::text::{ago, host_state, route, size, table, utc};
use ratatui::crossterm::event::{self, Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table, TableState};
use ratatui::Frame;

#[derive(Args, Debug)]
pub struct TopArgs {
    /// The daemon's API socket (default: $MOSVM_SOCK, else /run/mosvm/mosvm.sock).
    #[arg(long, value_name = "PATH")]
    pub sock: Option<PathBuf>,
    /// Seconds between refreshes.
    #[arg(long, value_name = "SECS", default_value_t = 1.0, value_parser = parse_interval)]
    pub interval: f64,
    /// Print one plain-text snapshot and exit (what happens anyway when
    /// stdout is not a terminal).
    #[arg(long)]
    pub once: bool,
    /// Print the cluster as one JSON object (a ClusterView) and exit.
    #[arg(long)]
    pub json: bool,
    /// How the jobs are sorted at first (the `s` key cycles).
    #[arg(long, value_enum, default_value_t = SortKey::Home)]
    pub sort: SortKey,
}

fn parse_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.1..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!("'{s}' is not an interval (give 0.1 to 3600 seconds)")),
    }
}

/// The job order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SortKey {
    /// By home, then id.
    Home,
    /// By where the body runs.
    Host,
    /// Largest memory first.
    Memory,
    /// Most CPU time first (jobs whose CPU is unknown last).
    Cpu,
    /// Longest running first.
    Age,
}

impl SortKey {
    const ALL: [SortKey; 5] = [SortKey::Home, SortKey::Host, SortKey::Memory, SortKey::Cpu, SortKey::Age];

    fn name(self) -> &'static str {
        match self {
            SortKey::Home => "home",
            SortKey::Host => "host",
            SortKey::Memory => "memory",
            SortKey::Cpu => "cpu",
            SortKey::Age => "age",
        }
    }

    fn next(self) -> SortKey {
        let i = SortKey::ALL.iter().position(|&k| k == self).unwrap_or(0);
        SortKey::ALL[(i + 1) % SortKey::ALL.len()]
    }
}

// ---- what both views show ----

/// CPU time: 0.42s, 2m03s, 1h02m.
fn cpu_time(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{:.2}s", ms as f64 / 1000.0),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s / 60 % 60),
    }
}

/// The host's name, starred when it is the one answering (as `hosts` does).
fn host_name(h: &HostView) -> String {
    if h.local {
        format!("{} *", h.name)
    } else {
        h.name.clone()
    }
}

/// Load information older than this is shown as such.
const STALE_LOAD_S: f64 = 5.0;

fn load_number(l: &LoadView) -> String {
    if l.age_s > STALE_LOAD_S {
        format!("{:.2} ({:.0}s old)", l.load, l.age_s)
    } else {
        format!("{:.2}", l.load)
    }
}

fn free_mem(h: &HostView) -> String {
    match (h.mem_available, h.mem_total) {
        (Some(a), Some(t)) => format!("{} of {}", size(a), size(t)),
        _ => "-".into(),
    }
}

/// Cells of the load bar: how many of `width` are full (the capacity is
/// the whole bar: a host beyond it shows full, and its number says by how
/// much).
fn bar_cells(load: f64, width: usize) -> usize {
    if !load.is_finite() || load <= 0.0 {
        return 0;
    }
    ((load.min(1.0) * width as f64).round() as usize).clamp(1, width)
}

const BAR: usize = 10;

fn text_bar(load: f64) -> String {
    let n = bar_cells(load, BAR);
    format!("[{}{}]", "#".repeat(n), ".".repeat(BAR - n))
}

fn job_ref(j: &JobView) -> String {
    format!("{}-{}", j.home, j.id)
}

fn program(j: &JobView) -> &str {
    j.program.rsplit('/').next().unwrap_or(&j.program)
}

/// Where the body runs; pinned ones say so.
fn job_where(j: &JobView) -> String {
    if j.stay {
        format!("{} (stay)", j.host)
    } else {
        j.host.clone()
    }
}

fn job_state(j: &JobView) -> String {
    match (j.state, &j.moving_to, j.exit_status) {
        (JobState::Moving, Some(to), _) => format!("moving to {to}"),
        (JobState::Exited, _, Some(st)) => format!("exited ({st})"),
        (s, _, _) => s.as_str().into(),
    }
}

fn job_cpu(j: &JobView) -> String {
    j.cpu_ms.map(cpu_time).unwrap_or_else(|| "-".into())
}

const JOB_HEADER: [&str; 9] = ["JOB", "PROGRAM", "HOME", "WHERE", "STATE", "AGE", "CPU", "MEM", "MOVES"];

fn job_cells(j: &JobView, now_ms: u64) -> Vec<String> {
    vec![
        job_ref(j),
        program(j).into(),
        j.home.clone(),
        job_where(j),
        job_state(j),
        ago(j.started_ms, now_ms),
        job_cpu(j),
        size(j.mem_bytes),
        j.moves.to_string(),
    ]
}

fn sorted_jobs(jobs: &[JobView], key: SortKey) -> Vec<&JobView> {
    let mut v: Vec<&JobView> = jobs.iter().collect();
    // Ties always fall back to home and id, so rows do not jump between
    // refreshes.
    v.sort_by(|a, b| (&a.home, a.id).cmp(&(&b.home, b.id)));
    match key {
        SortKey::Home => {}
        SortKey::Host => v.sort_by(|a, b| a.host.cmp(&b.host)),
        SortKey::Memory => v.sort_by_key(|j| Reverse(j.mem_bytes)),
        SortKey::Cpu => v.sort_by_key(|j| (j.cpu_ms.is_none(), Reverse(j.cpu_ms))),
        SortKey::Age => v.sort_by_key(|j| j.started_ms),
    }
    v
}

const MOVE_HEADER: [&str; 5] = ["AGO", "JOB", "MOVE", "EVENT", "REASON"];

fn move_kind(e: &Event) -> &'static str {
    match e.kind {
        EventKind::Moved => "moved",
        EventKind::MoveFailed => "failed",
        k => k.as_str(),
    }
}

fn move_cells(e: &Event, now_ms: u64) -> Vec<String> {
    vec![
        ago(e.at_ms, now_ms),
        e.job.clone().unwrap_or_else(|| "-".into()),
        route(e),
        move_kind(e).into(),
        // One line per move, whatever the reason holds.
        e.reason.replace('\n', " "),
    ]
}

/// The first line: where the view comes from and what it counts.
fn summary(v: &ClusterView) -> String {
    let alive = v.hosts.iter().filter(|h| h.state == HostState::Alive).count();
    let moving = v.jobs.iter().filter(|j| j.state == JobState::Moving).count();
    let at = v.hosts.iter().find(|h| h.local).map(|h| format!(" at {}", h.name)).unwrap_or_default();
    let plural = |n: usize, one: &str| if n == 1 { format!("1 {one}") } else { format!("{n} {one}s") };
    let mut s = format!("{} ({alive} alive), {}", plural(v.hosts.len(), "host"), plural(v.jobs.len(), "job"));
    if moving > 0 {
        s.push_str(&format!(" ({moving} moving)"));
    }
    format!("mosvm top{at}: {s}")
}

/// Warnings and the answering host's balancer, one line each.
fn notes(v: &ClusterView) -> Vec<String> {
    let mut out = Vec::new();
    if !v.unanswered.is_empty() {
        out.push(format!("no answer from {} (their jobs and moves are missing)", v.unanswered.join(", ")));
    }
    if let Some((h, b)) = v.hosts.iter().find_map(|h| Some((h, h.balancer.as_ref()?))) {
        if !b.note.is_empty() {
            out.push(format!("balancer at {}: {}", h.name, b.note));
        }
    }
    out
}

fn header(h: &[&str]) -> Vec<String> {
    h.iter().map(|s| s.to_string()).collect()
}

/// The plain-text snapshot: a HOSTS table, a JOBS table, a MOVES list.
pub fn snapshot(v: &ClusterView, sort: SortKey, now_ms: u64) -> String {
    let mut out = format!("{} ({} UTC)\n", summary(v), utc(now_ms));
    for n in notes(v) {
        out.push_str(&n);
        out.push('\n');
    }

    out.push_str("\nHOSTS\n");
    let mut rows = vec![header(&["NAME", "ADDRESS", "STATE", "LOAD", "CPUS", "JOBS", "FREE MEM"])];
    for h in &v.hosts {
        let (load, cpus) = match &h.load {
            Some(l) => (format!("{} {}", text_bar(l.load), load_number(l)), format!("{:.2}", l.cpus)),
            None => ("-".into(), "-".into()),
        };
        rows.push(vec![host_name(h), h.addr.clone(), host_state(h), load, cpus, h.jobs.to_string(), free_mem(h)]);
    }
    out.push_str(&table(&rows));

    out.push_str(&format!("\nJOBS (by {})\n", sort.name()));
    if v.jobs.is_empty() {
        out.push_str("(none running)\n");
    } else {
        let mut rows = vec![header(&JOB_HEADER)];
        rows.extend(sorted_jobs(&v.jobs, sort).into_iter().map(|j| job_cells(j, now_ms)));
        out.push_str(&table(&rows));
    }

    out.push_str("\nMOVES (newest first)\n");
    if v.moves.is_empty() {
        out.push_str("(none recorded)\n");
    } else {
        let mut rows = vec![header(&MOVE_HEADER)];
        rows.extend(v.moves.iter().map(|e| move_cells(e, now_ms)));
        out.push_str(&table(&rows));
    }
    out
}

// ---- the terminal view ----

/// The pane the arrow keys scroll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Focus {
    Hosts,
    Jobs,
    Moves,
}

/// What the terminal view shows: the latest answer, and how it is looked at.
struct App {
    view: ClusterView,
    /// When `view` was fetched.
    fetched: Instant,
    /// Why the latest refresh failed, if it did (the last good view stays).
    error: Option<String>,
    sort: SortKey,
    focus: Focus,
    hosts: TableState,
    jobs: TableState,
    moves: TableState,
    interval: f64,
}

impl App {
    fn new(view: ClusterView, sort: SortKey, interval: f64) -> App {
        App {
            view,
            fetched: Instant::now(),
            error: None,
            sort,
            focus: Focus::Jobs,
            hosts: TableState::default(),
            jobs: TableState::default(),
            moves: TableState::default(),
            interval,
        }
    }

    fn update(&mut self, r: Result<ClusterView, String>) {
        match r {
            Ok(v) => {
                self.view = v;
                self.fetched = Instant::now();
                self.error = None;
            }
            Err(e) => self.error = Some(e),
        }
    }

    fn pane(&mut self) -> (&mut TableState, usize) {
        match self.focus {
            Focus::Hosts => (&mut self.hosts, self.view.hosts.len()),
            Focus::Jobs => (&mut self.jobs, self.view.jobs.len()),
            Focus::Moves => (&mut self.moves, self.view.moves.len()),
        }
    }

    /// Moves the selection of the focused pane by `by` rows.
    fn scroll(&mut self, by: isize) {
        let (state, len) = self.pane();
        if len == 0 {
            state.select(None);
            return;
        }
        // Nothing selected yet: down starts from above the first row, up
        // from below the last.
        let at = state.selected().map_or(if by > 0 { -1 } else { len as isize }, |i| i as isize);
        state.select(Some(at.saturating_add(by).clamp(0, len as isize - 1) as usize));
    }

    /// Handles a key; false to quit.
    fn key(&mut self, k: KeyEvent) -> bool {
        match k.code {
            KeyCode::Char('q') | KeyCode::Esc => return false,
            KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => return false,
            KeyCode::Char('s') => self.sort = self.sort.next(),
            KeyCode::Char('h') => self.focus = Focus::Hosts,
            KeyCode::Char('j') => self.focus = Focus::Jobs,
            KeyCode::Char('m') => self.focus = Focus::Moves,
            KeyCode::Tab => {
                self.focus = match self.focus {
                    Focus::Hosts => Focus::Jobs,
                    Focus::Jobs => Focus::Moves,
                    Focus::Moves => Focus::Hosts,
                }
            }
            KeyCode::Up => self.scroll(-1),
            KeyCode::Down => self.scroll(1),
            KeyCode::PageUp => self.scroll(-10),
            KeyCode::PageDown => self.scroll(10),
            KeyCode::Home => self.scroll(isize::MIN),
            KeyCode::End => self.scroll(isize::MAX),
            _ => {}
        }
        true
    }
}

fn state_style(s: HostState) -> Style {
    match s {
        HostState::Alive => Style::new().fg(Color::Green),
        HostState::Suspect => Style::new().fg(Color::Yellow),
        HostState::Down => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        HostState::Left => Style::new().fg(Color::DarkGray),
    }
}

fn load_style(load: f64) -> Style {
    match load {
        l if l > 1.0 => Style::new().fg(Color::Red),
        l if l > 0.8 => Style::new().fg(Color::Yellow),
        _ => Style::new().fg(Color::Green),
    }
}

/// Widths of columns holding these cells (and at least their headers').
fn widths(head: &[&str], rows: &[Vec<String>]) -> Vec<u16> {
    (0..head.len())
        .map(|c| {
            let cells = rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count());
            cells.chain([head[c].len()]).max().unwrap_or(0) as u16
        })
        .collect()
}

/// Column constraints: fixed widths, the last one taking what is left
/// (however long its cells: a long reason is cut, not the columns before).
fn constraints(w: &[u16]) -> Vec<Constraint> {
    let last = w.len().saturating_sub(1);
    w.iter().enumerate().map(|(i, &n)| if i == last { Constraint::Fill(1) } else { Constraint::Length(n) }).collect()
}

fn pane_block(title: String, focused: bool) -> Block<'static> {
    let b = Block::bordered().title(Span::styled(title, Style::new().add_modifier(Modifier::BOLD)));
    if focused {
        b.border_style(Style::new().fg(Color::Cyan))
    } else {
        b.border_style(Style::new().fg(Color::DarkGray))
    }
}

fn head_row(h: &[&str]) -> Row<'static> {
    Row::new(h.iter().map(|s| Cell::from(s.to_string()))).style(Style::new().add_modifier(Modifier::BOLD).underlined())
}

const SELECTED: Style = Style::new().add_modifier(Modifier::REVERSED);

/// The cell of the load column: a bar of the load against the capacity,
/// then the number.
fn load_cell(l: &LoadView) -> Line<'static> {
    let n = bar_cells(l.load, BAR);
    let mut style = load_style(l.load);
    if l.age_s > STALE_LOAD_S {
        style = style.add_modifier(Modifier::DIM);
    }
    Line::from(vec![
        Span::styled("█".repeat(n), style),
        Span::styled("░".repeat(BAR - n), Style::new().fg(Color::DarkGray)),
        Span::raw(" "),
        Span::styled(load_number(l), style),
    ])
}

fn hosts_table(app: &App) -> Table<'static> {
    const HEAD: [&str; 7] = ["NAME", "ADDRESS", "STATE", "LOAD", "CPUS", "JOBS", "FREE MEM"];
    let hosts = &app.view.hosts;
    let cells: Vec<Vec<String>> = hosts
        .iter()
        .map(|h| {
            let (load, cpus) = match &h.load {
                // As wide as `load_cell`.
                Some(l) => (format!("{} {}", "#".repeat(BAR), load_number(l)), format!("{:.2}", l.cpus)),
                None => ("-".into(), "-".into()),
            };
            vec![host_name(h), h.addr.clone(), host_state(h), load, cpus, h.jobs.to_string(), free_mem(h)]
        })
        .collect();
    let w = widths(&HEAD, &cells);
    let rows = hosts.iter().zip(cells).map(|(h, c)| {
        let mut state = vec![Span::styled(h.state.as_str(), state_style(h.state))];
        if h.mode.closed() {
            let color = if h.mode == HostMode::Draining { Color::Magenta } else { Color::Yellow };
            state.push(Span::raw(", "));
            state.push(Span::styled(h.mode.as_str(), Style::new().fg(color).add_modifier(Modifier::BOLD)));
        }
        let load = h.load.as_ref().map(load_cell).unwrap_or_else(|| Line::from("-"));
        let name = if h.local { c[0].clone().bold() } else { Span::raw(c[0].clone()) };
        Row::new(vec![
            Cell::from(name),
            Cell::from(c[1].clone()),
            Cell::from(Line::from(state)),
            Cell::from(load),
            Cell::from(c[4].clone()),
            Cell::from(c[5].clone()),
            Cell::from(c[6].clone()),
        ])
    });
    Table::new(rows, constraints(&w))
        .header(head_row(&HEAD))
        .column_spacing(2)
        .block(pane_block(format!(" Hosts ({}) ", hosts.len()), app.focus == Focus::Hosts))
        .row_highlight_style(SELECTED)
}

fn jobs_table(app: &App, now_ms: u64) -> Table<'static> {
    let jobs = sorted_jobs(&app.view.jobs, app.sort);
    let cells: Vec<Vec<String>> = jobs.iter().map(|j| job_cells(j, now_ms)).collect();
    let w = widths(&JOB_HEADER, &cells);
    let rows = jobs.iter().zip(cells).map(|(j, c)| {
        let style = match j.state {
            JobState::Moving => Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
            JobState::Lost => Style::new().fg(Color::Red),
            JobState::Exited => Style::new().fg(Color::DarkGray),
            JobState::Running => Style::new(),
        };
        let mut row: Vec<Cell> = c.into_iter().map(Cell::from).collect();
        row[4] = row[4].clone().style(style);
        Row::new(row)
    });
    let title = format!(" Jobs ({}, by {}) ", jobs.len(), app.sort.name());
    Table::new(rows, constraints(&w))
        .header(head_row(&JOB_HEADER))
        .column_spacing(2)
        .block(pane_block(title, app.focus == Focus::Jobs))
        .row_highlight_style(SELECTED)
}

fn moves_table(app: &App, now_ms: u64) -> Table<'static> {
    let moves = &app.view.moves;
    let cells: Vec<Vec<String>> = moves.iter().map(|e| move_cells(e, now_ms)).collect();
    let w = widths(&MOVE_HEADER, &cells);
    let rows = moves.iter().zip(cells).map(|(e, c)| {
        let mut row: Vec<Cell> = c.into_iter().map(Cell::from).collect();
        if e.kind != EventKind::Moved {
            row[3] = row[3].clone().style(Style::new().fg(Color::Red));
        }
        Row::new(row)
    });
    Table::new(rows, constraints(&w))
        .header(head_row(&MOVE_HEADER))
        .column_spacing(2)
        .block(pane_block(" Latest moves ".into(), app.focus == Focus::Moves))
        .row_highlight_style(SELECTED)
}

/// Draws the whole view.
fn render(f: &mut Frame, app: &mut App, now_ms: u64) {
    let notes = notes(&app.view);
    let status_h = 1 + notes.len() as u16 + u16::from(app.error.is_some());
    let area = f.area();
    // The hosts get what they need up to a third of the screen; the jobs
    // and moves share the rest, the moves at least a third of it when
    // both do not fit.
    let hosts_h = (app.view.hosts.len() as u16 + 3).min((area.height / 3).max(4));
    let rest = area.height.saturating_sub(1 + hosts_h + status_h);
    let (jobs_want, moves_want) = (app.view.jobs.len().max(1) as u16 + 3, app.view.moves.len().max(1) as u16 + 3);
    let moves_h = if jobs_want + moves_want <= rest { rest - jobs_want } else { moves_want.min((rest / 3).max(4)) };
    let [title, hosts, jobs, moves, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(hosts_h),
        Constraint::Min(4),
        Constraint::Length(moves_h),
        Constraint::Length(status_h),
    ])
    .areas(area);

    let clock = format!("{} UTC", utc(now_ms));
    let [left, right] = Layout::horizontal([Constraint::Min(0), Constraint::Length(clock.len() as u16)]).areas(title);
    f.render_widget(Paragraph::new(summary(&app.view).bold()), left);
    f.render_widget(Paragraph::new(clock), right);

    let (h, j, m) = (hosts_table(app), jobs_table(app, now_ms), moves_table(app, now_ms));
    f.render_stateful_widget(h, hosts, &mut app.hosts);
    f.render_stateful_widget(j, jobs, &mut app.jobs);
    f.render_stateful_widget(m, moves, &mut app.moves);

    let mut lines: Vec<Line> = Vec::new();
    if let Some(e) = &app.error {
        let age = app.fetched.elapsed().as_secs();
        lines.push(Line::styled(format!("{e} (showing what it said {age}s ago)"), Style::new().fg(Color::Red)));
    }
    lines.extend(notes.into_iter().map(|n| Line::styled(n, Style::new().fg(Color::Yellow))));
    lines.push(keys_line(app));
    f.render_widget(Paragraph::new(lines), status);
}

fn keys_line(app: &App) -> Line<'static> {
    let key = |k: &'static str| Span::styled(k, Style::new().add_modifier(Modifier::BOLD).fg(Color::Cyan));
    Line::from(vec![
        key("q"),
        " quit  ".into(),
        key("s"),
        format!(" sort ({})  ", app.sort.name()).into(),
        key("h j m"),
        " hosts/jobs/moves  ".into(),
        key("↑↓"),
        " scroll  ".into(),
        Span::styled(format!("every {}s", app.interval), Style::new().fg(Color::DarkGray)),
    ])
}

// ---- running it ----

/// Set by SIGTERM, SIGHUP or SIGINT: leave (and restore the terminal).
static QUIT: AtomicBool = AtomicBool::new(false);

extern "C" fn on_quit_signal(_: libc::c_int) {
    QUIT.store(true, Ordering::Relaxed);
}

fn catch_quit_signals() {
    for sig in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_quit_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Leaves the alternate screen and raw mode however `live` ends (ratatui's
/// own panic hook covers panics, which abort in release builds).
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

fn live(client: BlockingClient, first: ClusterView, args: &TopArgs) -> std::io::Result<()> {
    let interval = Duration::from_secs_f64(args.interval);
    // The daemon is asked from a thread of its own: a slow answer (up to
    // the client's 10 s limit) must not freeze the keys.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || loop {
        std::thread::sleep(interval);
        let r = client.cluster().map_err(|e| e.to_string());
        if tx.send(r).is_err() {
            return;
        }
    });
    catch_quit_signals();
    let mut term = ratatui::try_init()?;
    let _restore = Restore;
    let mut app = App::new(first, args.sort, args.interval);
    let mut drawn_at = None;
    loop {
        if QUIT.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut dirty = false;
        while let Ok(r) = rx.try_recv() {
            app.update(r);
            dirty = true;
        }
        // Ages tick even without news.
        let now_ms = mosvm_host::server::now_ms();
        if dirty || drawn_at != Some(now_ms / 1000) {
            term.draw(|f| render(f, &mut app, now_ms))?;
            drawn_at = Some(now_ms / 1000);
        }
        if event::poll(Duration::from_millis(100))? {
            match event::read()? {
                TermEvent::Key(k) if k.kind == KeyEventKind::Press => {
                    if !app.key(k) {
                        return Ok(());
                    }
                    drawn_at = None;
                }
                TermEvent::Resize(..) => drawn_at = None,
                _ => {}
            }
        }
    }
}

pub fn top(args: TopArgs) -> i32 {
    let client = match BlockingClient::new(mosvm_host::socket_path(args.sock.as_deref())) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mosvm: {e}");
            return 1;
        }
    };
    let view = match client.cluster() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("mosvm: {e}");
            return 1;
        }
    };
    if args.json {
        return match serde_json::to_string(&view) {
            Ok(s) => {
                println!("{s}");
                0
            }
            Err(e) => {
                eprintln!("mosvm: {e}");
                1
            }
        };
    }
    if args.once || !std::io::stdout().is_terminal() {
        print!("{}", snapshot(&view, args.sort, mosvm_host::server::now_ms()));
        return 0;
    }
    match live(client, view, &args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("mosvm top: the terminal: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mosvm_host::api::BalancerStats;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    const NOW: u64 = 1_790_000_000_000;

    fn host(name: &str, state: HostState, load: Option<(f64, f64)>, mode: HostMode) -> HostView {
        HostView {
            name: name.into(),
            addr: format!("10.0.0.{}:7077", name.trim_start_matches('h')),
            state,
            local: false,
            jobs: 0,
            mem_available: Some(3 << 30),
            mem_total: Some(4 << 30),
            load: load.map(|(runnable, cpus)| LoadView {
                load: runnable / cpus,
                runnable,
                cpus,
                age_s: 0.5,
                accepting: !mode.closed(),
            }),
            balancer: None,
            mode,
        }
    }

    fn job(home: &str, id: u64, host: &str, mem_mib: u64, cpu_ms: Option<u64>, started_s_ago: u64) -> JobView {
        JobView {
            id,
            owner_uid: 1000,
            program: "/usr/local/bin/cpu".into(),
            home: home.into(),
            host: host.into(),
            state: JobState::Running,
            moving_to: None,
            exit_status: None,
            lost_reason: None,
            started_ms: NOW - started_s_ago * 1000,
            ended_ms: None,
            mem_bytes: mem_mib << 20,
            moves: u32::from(home != host),
            cpu_ms,
            argv: None,
            cwd: None,
            control_sock: None,
            deputy_addr: None,
            deputy_pid: None,
            detached: true,
            stay: false,
        }
    }

    fn moved(seq: u64, job: &str, from: &str, to: &str, kind: EventKind, reason: &str) -> Event {
        Event {
            seq,
            at_ms: NOW - 12_000,
            host: from.into(),
            kind,
            job: Some(job.into()),
            from: Some(from.into()),
            to: Some(to.into()),
            reason: reason.into(),
        }
    }

    fn cluster() -> ClusterView {
        let mut h2 = host("h2", HostState::Alive, Some((3.0, 2.0)), HostMode::Normal);
        h2.local = true;
        h2.jobs = 3;
        h2.balancer = Some(BalancerStats { note: "h3 is busy too".into(), ..BalancerStats::default() });
        let mut h3 = host("h3", HostState::Alive, Some((0.5, 1.0)), HostMode::Cordoned);
        h3.jobs = 1;
        let h4 = host("h4", HostState::Suspect, Some((0.0, 4.0)), HostMode::Draining);
        let mut h5 = host("h5", HostState::Down, None, HostMode::Normal);
        (h5.mem_available, h5.mem_total) = (None, None);
        let mut moving = job("h3", 1, "h3", 512, None, 90);
        (moving.state, moving.moving_to) = (JobState::Moving, Some("h2".into()));
        let mut pinned = job("h2", 7, "h2", 64, Some(61_500), 4000);
        pinned.stay = true;
        ClusterView {
            hosts: vec![h2, h3, h4, h5],
            jobs: vec![job("h2", 2, "h3", 256, None, 30), pinned, moving, job("h2", 1, "h2", 128, Some(900), 200)],
            moves: vec![
                moved(9, "h2-2", "h2", "h3", EventKind::Moved, "load 3.0 vs 0.5 at h3, gain 41 s > cost 0.2 s"),
                moved(8, "h2-1", "h2", "h4", EventKind::MoveFailed, "refused: h4 is draining"),
            ],
            unanswered: vec!["h4".into()],
        }
    }

    fn section<'a>(text: &'a str, title: &str) -> Vec<&'a str> {
        let start = text.lines().position(|l| l.starts_with(title)).unwrap_or_else(|| panic!("no {title}:\n{text}"));
        text.lines().skip(start + 1).take_while(|l| !l.is_empty()).collect()
    }

    #[test]
    fn formats() {
        assert_eq!(
            (size(64 << 20), size(1536 << 20), size(3 << 30), size(100)),
            ("64M".into(), "1.5G".into(), "3G".into(), "100B".into())
        );
        assert_eq!(
            (ago(NOW - 5_000, NOW), ago(NOW - 600_000, NOW), ago(NOW + 1, NOW)),
            ("5s".into(), "10m".into(), "0s".into())
        );
        assert_eq!(
            (cpu_time(420), cpu_time(123_000), cpu_time(3_720_000)),
            ("0.42s".into(), "2m03s".into(), "1h02m".into())
        );
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_709_251_199_000), "2024-02-29 23:59:59");
        assert_eq!((bar_cells(0.0, 10), bar_cells(0.01, 10), bar_cells(0.5, 10), bar_cells(7.0, 10)), (0, 1, 5, 10));
        assert_eq!(bar_cells(f64::NAN, 10), 0);
        assert_eq!(text_bar(0.3), "[###.......]");
        assert!(parse_interval("0.5").is_ok() && parse_interval("0").is_err() && parse_interval("x").is_err());
        assert_eq!(SortKey::Age.next(), SortKey::Home);
    }

    #[test]
    fn sorts() {
        let v = cluster();
        let ids = |k| sorted_jobs(&v.jobs, k).iter().map(|j| job_ref(j)).collect::<Vec<_>>().join(" ");
        assert_eq!(ids(SortKey::Home), "h2-1 h2-2 h2-7 h3-1");
        assert_eq!(ids(SortKey::Host), "h2-1 h2-7 h2-2 h3-1");
        assert_eq!(ids(SortKey::Memory), "h3-1 h2-2 h2-1 h2-7");
        assert_eq!(ids(SortKey::Cpu), "h2-7 h2-1 h2-2 h3-1");
        assert_eq!(ids(SortKey::Age), "h2-7 h2-1 h3-1 h2-2");
    }

    #[test]
    fn plain_snapshot() {
        let text = snapshot(&cluster(), SortKey::Home, NOW);
        eprintln!("{text}");
        let first = text.lines().next().unwrap();
        assert!(first.starts_with("mosvm top at h2: 4 hosts (2 alive), 4 jobs (1 moving) ("), "{first}");
        assert!(text.contains("no answer from h4 (their jobs and moves are missing)"), "{text}");
        assert!(text.contains("balancer at h2: h3 is busy too"), "{text}");

        let hosts = section(&text, "HOSTS");
        assert_eq!(hosts.len(), 5, "{hosts:?}");
        assert!(hosts[0].starts_with("NAME") && hosts[0].contains("FREE MEM"));
        let h2 = hosts[1];
        assert!(h2.starts_with("h2 *") && h2.contains("[##########] 1.50") && h2.contains("3G of 4G"), "{h2}");
        assert!(hosts[2].contains("alive, cordoned") && hosts[2].contains("[#####.....] 0.50"), "{}", hosts[2]);
        assert!(hosts[3].contains("suspect, draining") && hosts[3].contains("[..........] 0.00"), "{}", hosts[3]);
        let h5: Vec<&str> = hosts[4].split_whitespace().collect();
        assert_eq!(h5, ["h5", "10.0.0.5:7077", "down", "-", "-", "0", "-"]);

        let jobs = section(&text, "JOBS (by home)");
        let cols: Vec<Vec<&str>> = jobs.iter().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(cols[0], JOB_HEADER);
        assert_eq!(cols[1], ["h2-1", "cpu", "h2", "h2", "running", "3m", "0.90s", "128M", "0"]);
        assert_eq!(cols[2], ["h2-2", "cpu", "h2", "h3", "running", "30s", "-", "256M", "1"]);
        assert_eq!(cols[3], ["h2-7", "cpu", "h2", "h2", "(stay)", "running", "1h", "1m01s", "64M", "0"]);
        assert_eq!(cols[4], ["h3-1", "cpu", "h3", "h3", "moving", "to", "h2", "1m", "-", "512M", "0"]);

        let moves = section(&text, "MOVES");
        assert_eq!(moves.len(), 3);
        assert!(moves[1].starts_with("12s") && moves[1].contains("h2-2  h2 -> h3  moved   load 3.0"), "{}", moves[1]);
        assert!(moves[2].contains("h2 -> h4  failed  refused: h4 is draining"), "{}", moves[2]);
    }

    #[test]
    fn empty_snapshot() {
        let v = ClusterView { hosts: vec![], jobs: vec![], moves: vec![], unanswered: vec![] };
        let text = snapshot(&v, SortKey::Cpu, NOW);
        assert!(text.starts_with("mosvm top: 0 hosts (0 alive), 0 jobs ("), "{text}");
        assert!(text.contains("JOBS (by cpu)\n(none running)\n") && text.contains("(none recorded)"), "{text}");
    }

    fn screen(app: &mut App, w: u16, h: u16) -> (String, ratatui::buffer::Buffer) {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| render(f, app, NOW)).unwrap();
        let buf = t.backend().buffer().clone();
        let text = buf
            .content
            .chunks(w as usize)
            .map(|row| row.iter().map(|c| c.symbol()).collect::<String>().trim_end().to_string())
            .collect::<Vec<_>>()
            .join("\n");
        (text, buf)
    }

    fn find(text: &str, needle: &str) -> (u16, u16) {
        for (y, line) in text.lines().enumerate() {
            if let Some(x) = line.find(needle) {
                return (line[..x].chars().count() as u16, y as u16);
            }
        }
        panic!("{needle:?} not on the screen:\n{text}");
    }

    #[test]
    fn terminal_view() {
        let mut app = App::new(cluster(), SortKey::Home, 1.0);
        let (text, buf) = screen(&mut app, 120, 30);
        eprintln!("{text}");
        assert!(text.lines().next().unwrap().starts_with("mosvm top at h2: 4 hosts (2 alive), 4 jobs (1 moving)"));
        for needle in [
            " Hosts (4) ",
            " Jobs (4, by home) ",
            " Latest moves ",
            "h2 *",
            "alive, cordoned",
            "suspect, draining",
            "██████████ 1.50",
            "█████░░░░░ 0.50",
            "moving to h2",
            "h2 (stay)",
            "h2 -> h4  failed  refused: h4 is draining",
            "no answer from h4",
            "balancer at h2: h3 is busy too",
            "q quit",
        ] {
            find(&text, needle);
        }
        // Colours say what the words say.
        let (x, y) = find(&text, "down");
        assert_eq!(buf[(x, y)].fg, Color::Red);
        let (x, y) = find(&text, "██████████ 1.50");
        assert_eq!(buf[(x, y)].fg, Color::Red, "an overloaded host");
        let (x, y) = find(&text, "█████░░░░░ 0.50");
        assert_eq!(buf[(x, y)].fg, Color::Green);
        let (x, y) = find(&text, "draining");
        assert_eq!(buf[(x, y)].fg, Color::Magenta);
        let (x, y) = find(&text, "moving to h2");
        assert_eq!(buf[(x, y)].fg, Color::Cyan);
        let order: Vec<u16> = ["h2-1", "h2-2", "h2-7", "h3-1"].iter().map(|j| find(&text, j).1).collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");

        // Sorting by memory puts the biggest first; a failed refresh keeps
        // the view and says why.
        assert!(app.key(KeyEvent::from(KeyCode::Char('s'))));
        assert!(app.key(KeyEvent::from(KeyCode::Char('s'))));
        app.update(Err("cannot reach the mosvm host daemon".into()));
        let (text, _) = screen(&mut app, 120, 30);
        find(&text, " Jobs (4, by memory) ");
        find(&text, "cannot reach the mosvm host daemon (showing what it said 0s ago)");
        let order: Vec<u16> = ["h3-1", "h2-2", "h2-1", "h2-7"].iter().map(|j| find(&text, j).1).collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
        app.update(Ok(cluster()));
        assert!(!screen(&mut app, 120, 30).0.contains("cannot reach"));

        // A long reason is cut; the columns before it stay.
        app.view.moves[0].reason = "load: 1.86 here vs 0.77 on host h3; ".repeat(10);
        let (text, _) = screen(&mut app, 100, 30);
        find(&text, "12s  h2-2  h2 -> h3  moved   load: 1.86 here vs 0.77 on host h3; load");

        // A small terminal still draws (clipped), without panicking.
        screen(&mut app, 40, 8);
        screen(&mut app, 1, 1);
    }

    #[test]
    fn keys() {
        let mut app = App::new(cluster(), SortKey::Home, 1.0);
        assert_eq!(app.focus, Focus::Jobs);
        app.key(KeyEvent::from(KeyCode::Down));
        assert_eq!(app.jobs.selected(), Some(0));
        app.key(KeyEvent::from(KeyCode::End));
        assert_eq!(app.jobs.selected(), Some(3));
        app.key(KeyEvent::from(KeyCode::Down));
        assert_eq!(app.jobs.selected(), Some(3));
        app.key(KeyEvent::from(KeyCode::PageUp));
        assert_eq!(app.jobs.selected(), Some(0));
        app.key(KeyEvent::from(KeyCode::Char('h')));
        app.key(KeyEvent::from(KeyCode::Up));
        assert_eq!((app.focus, app.hosts.selected()), (Focus::Hosts, Some(3)), "up from nothing: the last");
        app.key(KeyEvent::from(KeyCode::Tab));
        assert_eq!(app.focus, Focus::Jobs);
        app.key(KeyEvent::from(KeyCode::Char('m')));
        assert_eq!(app.focus, Focus::Moves);
        assert!(!app.key(KeyEvent::from(KeyCode::Char('q'))));
        assert!(!app.key(KeyEvent::from(KeyCode::Esc)));
        assert!(!app.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)));
        assert!(app.key(KeyEvent::from(KeyCode::Char('c'))));
    }
}
