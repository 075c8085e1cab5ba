//! Job records in SQLite: every job this host is home to, with its moves,
//! and this host's events (what its balancer and daemon decided and saw).
//! The schema is versioned with `PRAGMA user_version`; opening a database
//! applies the migrations it lacks, and refuses one written by a newer
//! release rather than guess at it.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::api::{
    Event, EventKind, HostMode, JobState, JobView, MoveView, MoveWhy, NewEvent, NewJob, NewMove, StateChange,
};

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE jobs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_uid    INTEGER NOT NULL,
    owner_gid    INTEGER NOT NULL,
    program      TEXT    NOT NULL,
    argv         TEXT    NOT NULL,            -- JSON array of strings
    cwd          TEXT    NOT NULL,
    control_sock TEXT,
    deputy_addr  TEXT,
    deputy_pid   INTEGER,
    deputy_start INTEGER,                     -- /proc/PID/stat starttime: tells a reused pid
    home         TEXT    NOT NULL,
    host         TEXT    NOT NULL,            -- where the body runs (or ran last)
    state        TEXT    NOT NULL CHECK (state IN ('running', 'moving', 'exited', 'lost')),
    moving_to    TEXT,
    started_ms   INTEGER NOT NULL,
    ended_ms     INTEGER,
    exit_status  INTEGER,
    lost_reason  TEXT,
    mem_bytes    INTEGER NOT NULL,
    moves        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_state ON jobs(state);
CREATE TABLE moves (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job         INTEGER NOT NULL REFERENCES jobs(id),
    from_host   TEXT    NOT NULL,
    to_host     TEXT    NOT NULL,
    at_ms       INTEGER NOT NULL,
    total_ms    REAL    NOT NULL,
    downtime_ms REAL    NOT NULL,
    why         TEXT    NOT NULL CHECK (why IN ('operator', 'balancer'))
);
CREATE INDEX moves_job ON moves(job);
"#,
    r#"
-- Started by the daemon (`run -d`): its output is in the state dir.
ALTER TABLE jobs ADD COLUMN detached INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
-- Pinned by its user (`run --stay`): the balancer never moves it.
ALTER TABLE jobs ADD COLUMN stay INTEGER NOT NULL DEFAULT 0;
-- Moves say what for (the balancer's kinds) and why, in words. SQLite
-- cannot change a CHECK: the table is rebuilt, ids and all.
CREATE TABLE moves_v3 (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job         INTEGER NOT NULL REFERENCES jobs(id),
    from_host   TEXT    NOT NULL,
    to_host     TEXT    NOT NULL,
    at_ms       INTEGER NOT NULL,
    total_ms    REAL    NOT NULL,
    downtime_ms REAL    NOT NULL,
    why         TEXT    NOT NULL CHECK (why IN ('operator', 'balancer', 'load', 'memory', 'drain')),
    reason      TEXT
);
INSERT INTO moves_v3 (id, job, from_host, to_host, at_ms, total_ms, downtime_ms, why)
    SELECT id, job, from_host, to_host, at_ms, total_ms, downtime_ms, why FROM moves;
DROP TABLE moves;
ALTER TABLE moves_v3 RENAME TO moves;
CREATE INDEX moves_job ON moves(job);
-- What this host decided and saw, newest last; bounded (Store::add_event).
CREATE TABLE events (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms     INTEGER NOT NULL,
    host      TEXT    NOT NULL,
    kind      TEXT    NOT NULL,
    job       TEXT,
    from_host TEXT,
    to_host   TEXT,
    reason    TEXT    NOT NULL
);
"#,
    r#"
-- This host's own settings that outlive a restart: its mode (normal,
-- cordoned, draining) and when a drain began.
CREATE TABLE host (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"#,
];

/// How many events the records keep (the newest).
pub const EVENTS_KEPT: u64 = 100_000;
/// Older events are deleted at every this many-th insert.
const EVENTS_PRUNE_EVERY: u64 = 1000;

/// The schema version this release writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("job records: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("job records: schema version {found} was written by a newer mosvm (this one knows up to {known})")]
    NewerSchema { found: u32, known: u32 },
    #[error("no job {0}")]
    NotFound(u64),
    #[error("job {id} has ended ({state}): its record no longer changes")]
    Ended { id: u64, state: &'static str },
    #[error("job records: {0}")]
    Corrupt(String),
}

/// Who owns a job and which process is its deputy, from the registering
/// socket's peer credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<u32>,
}

/// A job's full record.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: u64,
    pub owner_uid: u32,
    pub owner_gid: u32,
    pub program: String,
    pub argv: Vec<String>,
    pub cwd: String,
    pub control_sock: Option<String>,
    pub deputy_addr: Option<String>,
    pub deputy_pid: Option<u32>,
    pub deputy_start: Option<u64>,
    pub home: String,
    pub host: String,
    pub state: JobState,
    pub moving_to: Option<String>,
    pub started_ms: u64,
    pub ended_ms: Option<u64>,
    pub exit_status: Option<i32>,
    pub lost_reason: Option<String>,
    pub mem_bytes: u64,
    pub moves: u32,
    pub detached: bool,
    /// Pinned by its user (`run --stay`): the balancer never moves it.
    pub stay: bool,
}

impl JobRecord {
    /// The record as shown to a caller; `private` includes what only the
    /// owner or root may see.
    pub fn view(&self, private: bool, cpu_ms: Option<u64>) -> JobView {
        let p = |v: &Option<String>| if private { v.clone() } else { None };
        JobView {
            id: self.id,
            owner_uid: self.owner_uid,
            program: self.program.clone(),
            home: self.home.clone(),
            host: self.host.clone(),
            state: self.state,
            moving_to: self.moving_to.clone(),
            exit_status: self.exit_status,
            lost_reason: self.lost_reason.clone(),
            started_ms: self.started_ms,
            ended_ms: self.ended_ms,
            mem_bytes: self.mem_bytes,
            moves: self.moves,
            cpu_ms,
            argv: private.then(|| self.argv.clone()),
            cwd: private.then(|| self.cwd.clone()),
            control_sock: p(&self.control_sock),
            deputy_addr: p(&self.deputy_addr),
            deputy_pid: if private { self.deputy_pid } else { None },
            detached: self.detached,
            stay: self.stay,
        }
    }
}

pub struct Store {
    conn: Connection,
    /// EVENTS_KEPT but in tests.
    events_kept: u64,
}

const JOB_COLUMNS: &str = "id, owner_uid, owner_gid, program, argv, cwd, control_sock, deputy_addr, deputy_pid, \
     deputy_start, home, host, state, moving_to, started_ms, ended_ms, exit_status, lost_reason, mem_bytes, moves, \
     detached, stay";

fn job_from_row(row: &Row) -> rusqlite::Result<JobRecord> {
    let argv: String = row.get(4)?;
    let state: String = row.get(12)?;
    let bad = |i: usize, what: String| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            Box::<dyn std::error::Error + Send + Sync>::from(what),
        )
    };
    Ok(JobRecord {
        id: row.get::<_, i64>(0)? as u64,
        owner_uid: row.get(1)?,
        owner_gid: row.get(2)?,
        program: row.get(3)?,
        argv: serde_json::from_str(&argv).map_err(|e| bad(4, format!("argv: {e}")))?,
        cwd: row.get(5)?,
        control_sock: row.get(6)?,
        deputy_addr: row.get(7)?,
        deputy_pid: row.get(8)?,
        deputy_start: row.get::<_, Option<i64>>(9)?.map(|v| v as u64),
        home: row.get(10)?,
        host: row.get(11)?,
        state: JobState::parse(&state).ok_or_else(|| bad(12, format!("unknown state {state:?}")))?,
        moving_to: row.get(13)?,
        started_ms: row.get::<_, i64>(14)? as u64,
        ended_ms: row.get::<_, Option<i64>>(15)?.map(|v| v as u64),
        exit_status: row.get(16)?,
        lost_reason: row.get(17)?,
        mem_bytes: row.get::<_, i64>(18)? as u64,
        moves: row.get(19)?,
        detached: row.get(20)?,
        stay: row.get(21)?,
    })
}

impl Store {
    /// Opens (creating if needed) the records at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::init(Connection::open(path)?)
    }

    /// Records that live only as long as the Store (for tests).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        Store::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Store, StoreError> {
        // WAL: readers never wait for the writer; NORMAL is durable across
        // a daemon crash (only an OS crash can lose the last commits).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mut store = Store { conn, events_kept: EVENTS_KEPT };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let found: u32 = self.conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema { found, known: SCHEMA_VERSION });
        }
        for (v, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", v as u32 + 1)?;
            tx.commit()?;
        }
        Ok(())
    }

    pub fn schema_version(&self) -> Result<u32, StoreError> {
        Ok(self.conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    /// Records a new job, running at `home`; `deputy_start` tells the
    /// deputy process from a later one with the same pid.
    pub fn insert_job(
        &mut self,
        owner: Owner,
        job: &NewJob,
        home: &str,
        deputy_start: Option<u64>,
        now_ms: u64,
    ) -> Result<JobRecord, StoreError> {
        let argv = serde_json::to_string(&job.argv).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.conn.execute(
            "INSERT INTO jobs (owner_uid, owner_gid, program, argv, cwd, control_sock, deputy_addr, deputy_pid, \
             deputy_start, home, host, state, started_ms, mem_bytes, stay) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, 'running', ?11, ?12, ?13)",
            params![
                owner.uid,
                owner.gid,
                job.program,
                argv,
                job.cwd,
                job.control_sock,
                job.deputy_addr,
                owner.pid,
                deputy_start.map(|v| v as i64),
                home,
                now_ms as i64,
                job.mem_bytes as i64,
                job.stay,
            ],
        )?;
        let id = self.conn.last_insert_rowid() as u64;
        self.job(id)?.ok_or(StoreError::NotFound(id))
    }

    /// Records a job the daemon starts itself (`run -d`), before its
    /// deputy process exists: `set_deputy` names the process, and the
    /// process's own registration (`adopt`) fills in the rest.
    pub fn insert_detached(
        &mut self,
        owner: Owner,
        job: &NewJob,
        home: &str,
        now_ms: u64,
    ) -> Result<JobRecord, StoreError> {
        let argv = serde_json::to_string(&job.argv).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.conn.execute(
            "INSERT INTO jobs (owner_uid, owner_gid, program, argv, cwd, home, host, state, started_ms, mem_bytes, \
             detached, stay) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, 'running', ?7, ?8, 1, ?9)",
            params![
                owner.uid,
                owner.gid,
                job.program,
                argv,
                job.cwd,
                home,
                now_ms as i64,
                job.mem_bytes as i64,
                job.stay
            ],
        )?;
        let id = self.conn.last_insert_rowid() as u64;
        self.job(id)?.ok_or(StoreError::NotFound(id))
    }

    pub fn set_deputy(&mut self, id: u64, pid: u32, start: Option<u64>) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE jobs SET deputy_pid = ?2, deputy_start = ?3 WHERE id = ?1",
            params![id as i64, pid, start.map(|v| v as i64)],
        )?;
        Ok(())
    }

    /// The detached job, still running and not yet registered, whose
    /// deputy is process `pid` of `uid`.
    pub fn adoptable(&self, uid: u32, pid: u32) -> Result<Option<u64>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT id FROM jobs WHERE detached = 1 AND control_sock IS NULL AND deputy_addr IS NULL \
                 AND state = 'running' AND owner_uid = ?1 AND deputy_pid = ?2",
                params![uid, pid],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .map(|v| v as u64))
    }

    /// A detached job's deputy registers: what it runs, and how to reach it.
    /// A job pinned when it was started stays pinned.
    pub fn adopt(&mut self, id: u64, job: &NewJob) -> Result<JobRecord, StoreError> {
        let argv = serde_json::to_string(&job.argv).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.conn.execute(
            "UPDATE jobs SET program = ?2, argv = ?3, cwd = ?4, control_sock = ?5, deputy_addr = ?6, mem_bytes = ?7, \
             stay = MAX(stay, ?8) WHERE id = ?1",
            params![
                id as i64,
                job.program,
                argv,
                job.cwd,
                job.control_sock,
                job.deputy_addr,
                job.mem_bytes as i64,
                job.stay
            ],
        )?;
        self.job(id)?.ok_or(StoreError::NotFound(id))
    }

    pub fn job(&self, id: u64) -> Result<Option<JobRecord>, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1");
        Ok(self.conn.query_row(&sql, [id as i64], job_from_row).optional()?)
    }

    /// Jobs by id; only those not ended unless `all`.
    pub fn jobs(&self, all: bool) -> Result<Vec<JobRecord>, StoreError> {
        let filter = if all { "" } else { "WHERE state IN ('running', 'moving')" };
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs {filter} ORDER BY id");
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([], job_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn live(&self, id: u64) -> Result<JobRecord, StoreError> {
        let job = self.job(id)?.ok_or(StoreError::NotFound(id))?;
        if job.state.ended() {
            return Err(StoreError::Ended { id, state: job.state.as_str() });
        }
        Ok(job)
    }

    pub fn set_state(&mut self, id: u64, change: &StateChange, now_ms: u64) -> Result<JobRecord, StoreError> {
        self.live(id)?;
        let now = now_ms as i64;
        let n = match change {
            StateChange::Running { host } => self.conn.execute(
                "UPDATE jobs SET state = 'running', host = ?2, moving_to = NULL WHERE id = ?1",
                params![id as i64, host],
            )?,
            StateChange::Moving { to } => self
                .conn
                .execute("UPDATE jobs SET state = 'moving', moving_to = ?2 WHERE id = ?1", params![id as i64, to])?,
            StateChange::Exited { status } => self.conn.execute(
                "UPDATE jobs SET state = 'exited', exit_status = ?2, ended_ms = ?3, moving_to = NULL WHERE id = ?1",
                params![id as i64, status, now],
            )?,
            StateChange::Lost { reason } => self.conn.execute(
                "UPDATE jobs SET state = 'lost', lost_reason = ?2, ended_ms = ?3, moving_to = NULL WHERE id = ?1",
                params![id as i64, reason, now],
            )?,
        };
        debug_assert_eq!(n, 1);
        self.job(id)?.ok_or(StoreError::NotFound(id))
    }

    /// Records a completed move: the body now runs at `mv.to`.
    pub fn add_move(&mut self, id: u64, mv: &NewMove) -> Result<JobRecord, StoreError> {
        self.live(id)?;
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO moves (job, from_host, to_host, at_ms, total_ms, downtime_ms, why, reason) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                id as i64,
                mv.from,
                mv.to,
                mv.at_ms as i64,
                mv.total_ms,
                mv.downtime_ms,
                mv.why.as_str(),
                mv.reason
            ],
        )?;
        tx.execute(
            "UPDATE jobs SET moves = moves + 1, host = ?2, state = 'running', moving_to = NULL WHERE id = ?1",
            params![id as i64, mv.to],
        )?;
        tx.commit()?;
        self.job(id)?.ok_or(StoreError::NotFound(id))
    }

    /// A job's moves, oldest first.
    pub fn moves(&self, id: u64) -> Result<Vec<MoveView>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT from_host, to_host, at_ms, total_ms, downtime_ms, why, reason FROM moves WHERE job = ?1 \
             ORDER BY id",
        )?;
        let rows = stmt.query_map([id as i64], |r| {
            let why: String = r.get(5)?;
            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)?, r.get(3)?, r.get(4)?, why, r.get(6)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (from, to, at, total_ms, downtime_ms, why, reason) = row?;
            let why = MoveWhy::parse(&why).ok_or_else(|| StoreError::Corrupt(format!("move reason {why:?}")))?;
            out.push(MoveView { from, to, at_ms: at as u64, total_ms, downtime_ms, why, reason });
        }
        Ok(out)
    }

    /// Records an event, seen or decided by `host`; keeps only the newest
    /// `EVENTS_KEPT`.
    pub fn add_event(&mut self, host: &str, e: &NewEvent, at_ms: u64) -> Result<Event, StoreError> {
        self.conn.execute(
            "INSERT INTO events (at_ms, host, kind, job, from_host, to_host, reason) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![at_ms as i64, host, e.kind.as_str(), e.job, e.from, e.to, e.reason],
        )?;
        let seq = self.conn.last_insert_rowid() as u64;
        if seq.is_multiple_of(EVENTS_PRUNE_EVERY) && seq > self.events_kept {
            self.conn.execute("DELETE FROM events WHERE seq <= ?1", [(seq - self.events_kept) as i64])?;
        }
        Ok(Event {
            seq,
            at_ms,
            host: host.to_string(),
            kind: e.kind,
            job: e.job.clone(),
            from: e.from.clone(),
            to: e.to.clone(),
            reason: e.reason.clone(),
        })
    }

    fn query_events(&self, sql: &str, p: impl rusqlite::Params) -> Result<Vec<Event>, StoreError> {
        let mut stmt = self.conn.prepare(sql)?;
        let rows = stmt.query_map(p, |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, at, host, kind, job, from, to, reason) = row?;
            let kind = EventKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("event kind {kind:?}")))?;
            out.push(Event { seq: seq as u64, at_ms: at as u64, host, kind, job, from, to, reason });
        }
        Ok(out)
    }

    /// At most `limit` events newer than `after`, oldest first.
    pub fn events(&self, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.query_events(
            "SELECT seq, at_ms, host, kind, job, from_host, to_host, reason FROM events WHERE seq > ?1 \
             ORDER BY seq LIMIT ?2",
            params![after.min(i64::MAX as u64) as i64, limit.min(i64::MAX as usize) as i64],
        )
    }

    /// The newest `n` events, oldest first.
    pub fn last_events(&self, n: usize) -> Result<Vec<Event>, StoreError> {
        let mut v = self.query_events(
            "SELECT seq, at_ms, host, kind, job, from_host, to_host, reason FROM events ORDER BY seq DESC LIMIT ?1",
            [n.min(i64::MAX as usize) as i64],
        )?;
        v.reverse();
        Ok(v)
    }

    /// This host's mode and, while draining, when the drain began.
    pub fn mode(&self) -> Result<(HostMode, Option<u64>), StoreError> {
        let get = |k: &str| -> Result<Option<String>, StoreError> {
            Ok(self.conn.query_row("SELECT value FROM host WHERE key = ?1", [k], |r| r.get(0)).optional()?)
        };
        let mode = match get("mode")? {
            Some(m) => HostMode::parse(&m).ok_or_else(|| StoreError::Corrupt(format!("host mode {m:?}")))?,
            None => HostMode::Normal,
        };
        let since = get("drain_started_ms")?.and_then(|v| v.parse().ok());
        Ok((mode, since.filter(|_| mode == HostMode::Draining)))
    }

    pub fn set_mode(&mut self, mode: HostMode, drain_started_ms: Option<u64>) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute("INSERT OR REPLACE INTO host (key, value) VALUES ('mode', ?1)", [mode.as_str()])?;
        match drain_started_ms {
            Some(t) => {
                tx.execute("INSERT OR REPLACE INTO host (key, value) VALUES ('drain_started_ms', ?1)", [t.to_string()])?
            }
            None => tx.execute("DELETE FROM host WHERE key = 'drain_started_ms'", [])?,
        };
        tx.commit()?;
        Ok(())
    }

    /// How many of this home's jobs run (or are moving away from) each host.
    pub fn running_by_host(&self) -> Result<Vec<(String, u32)>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT host, COUNT(*) FROM jobs WHERE state IN ('running', 'moving') GROUP BY host ORDER BY host",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> NewJob {
        NewJob {
            program: "/bin/true".into(),
            argv: vec!["true".into(), "x y".into()],
            cwd: "/tmp".into(),
            control_sock: Some("/tmp/j.sock".into()),
            deputy_addr: None,
            mem_bytes: 256 << 20,
            stay: false,
        }
    }

    const OWNER: Owner = Owner { uid: 1000, gid: 1000, pid: Some(42) };

    #[test]
    fn lifecycle() {
        let mut s = Store::open_in_memory().unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        let j = s.insert_job(OWNER, &job(), "a", Some(7), 1000).unwrap();
        assert_eq!((j.id, j.state, j.host.as_str(), j.home.as_str()), (1, JobState::Running, "a", "a"));
        assert_eq!(j.argv, job().argv);
        assert_eq!((j.deputy_pid, j.deputy_start), (Some(42), Some(7)));
        let j = s.set_state(1, &StateChange::Moving { to: "b".into() }, 1100).unwrap();
        assert_eq!((j.state, j.moving_to.as_deref()), (JobState::Moving, Some("b")));
        let mv = NewMove {
            from: "a".into(),
            to: "b".into(),
            at_ms: 1200,
            total_ms: 3.5,
            downtime_ms: 0.5,
            why: MoveWhy::Operator,
            reason: None,
        };
        let j = s.add_move(1, &mv).unwrap();
        assert_eq!((j.state, j.host.as_str(), j.moves, j.moving_to), (JobState::Running, "b", 1, None));
        assert_eq!(s.running_by_host().unwrap(), vec![("b".to_string(), 1)]);
        let hist = s.moves(1).unwrap();
        assert_eq!(hist.len(), 1);
        assert_eq!((hist[0].total_ms, hist[0].why, hist[0].reason.as_deref()), (3.5, MoveWhy::Operator, None));
        let why = "load 3.0 vs 1.0 at c, gain 41 s > cost 0.2 s";
        let mv2 =
            NewMove { from: "b".into(), to: "c".into(), why: MoveWhy::Load, reason: Some(why.into()), ..mv.clone() };
        s.add_move(1, &mv2).unwrap();
        let hist = s.moves(1).unwrap();
        assert_eq!((hist[1].why, hist[1].reason.as_deref(), hist[1].to.as_str()), (MoveWhy::Load, Some(why), "c"));
        let mv3 = NewMove { from: "c".into(), to: "b".into(), ..mv.clone() };
        s.add_move(1, &mv3).unwrap();
        let j = s.set_state(1, &StateChange::Exited { status: 3 }, 2000).unwrap();
        assert_eq!((j.state, j.exit_status, j.ended_ms), (JobState::Exited, Some(3), Some(2000)));
        assert!(matches!(s.set_state(1, &StateChange::Running { host: "a".into() }, 1), Err(StoreError::Ended { .. })));
        assert!(matches!(s.add_move(1, &mv), Err(StoreError::Ended { .. })));
        assert!(matches!(s.set_state(9, &StateChange::Exited { status: 0 }, 1), Err(StoreError::NotFound(9))));
        assert_eq!(s.jobs(false).unwrap().len(), 0);
        assert_eq!(s.jobs(true).unwrap().len(), 1);
        assert!(s.running_by_host().unwrap().is_empty());
    }

    #[test]
    fn detached_jobs_are_adopted_by_their_deputy_once() {
        let mut s = Store::open_in_memory().unwrap();
        let draft = NewJob { control_sock: None, ..job() };
        let j = s.insert_detached(OWNER, &draft, "a", 5).unwrap();
        assert!(j.detached && j.deputy_pid.is_none());
        assert_eq!(s.adoptable(1000, 77).unwrap(), None, "no deputy named yet");
        s.set_deputy(j.id, 77, Some(9)).unwrap();
        assert_eq!(s.adoptable(1001, 77).unwrap(), None, "another uid's process");
        assert_eq!(s.adoptable(1000, 78).unwrap(), None, "another process");
        assert_eq!(s.adoptable(1000, 77).unwrap(), Some(j.id));
        let reg = NewJob { deputy_addr: Some("0.0.0.0:4000".into()), ..job() };
        let j = s.adopt(j.id, &reg).unwrap();
        assert_eq!((j.control_sock.as_deref(), j.deputy_pid, j.deputy_start), (Some("/tmp/j.sock"), Some(77), Some(9)));
        assert_eq!(s.adoptable(1000, 77).unwrap(), None, "adopted once");
        assert!(!s.insert_job(OWNER, &job(), "a", None, 1).unwrap().detached);
    }

    #[test]
    fn pinned_jobs_stay_pinned() {
        let mut s = Store::open_in_memory().unwrap();
        let pinned = NewJob { stay: true, ..job() };
        let j = s.insert_job(OWNER, &pinned, "a", None, 1).unwrap();
        assert!(j.stay && j.view(false, None).stay);
        assert!(!s.insert_job(OWNER, &job(), "a", None, 1).unwrap().stay);
        // `run -d --stay`: the draft is pinned; the deputy's registration
        // (which says so too, but need not) keeps it pinned.
        let d = s.insert_detached(OWNER, &NewJob { control_sock: None, ..pinned.clone() }, "a", 1).unwrap();
        assert!(d.stay);
        s.set_deputy(d.id, 77, None).unwrap();
        assert!(s.adopt(d.id, &job()).unwrap().stay);
        let d = s.insert_detached(OWNER, &NewJob { control_sock: None, ..job() }, "a", 1).unwrap();
        assert!(!d.stay);
        assert!(s.adopt(d.id, &pinned).unwrap().stay);
    }

    fn ev(kind: EventKind, job: Option<&str>, reason: &str) -> NewEvent {
        NewEvent {
            kind,
            job: job.map(str::to_string),
            from: Some("a".into()),
            to: Some("b".into()),
            reason: reason.into(),
        }
    }

    #[test]
    fn events_are_kept_in_order() {
        let mut s = Store::open_in_memory().unwrap();
        assert!(s.events(0, 10).unwrap().is_empty());
        assert!(s.last_events(10).unwrap().is_empty());
        let e1 = s.add_event("a", &ev(EventKind::Moved, Some("a-1"), "load 3.0 vs 1.0"), 100).unwrap();
        assert_eq!(
            e1,
            Event {
                seq: 1,
                at_ms: 100,
                host: "a".into(),
                kind: EventKind::Moved,
                job: Some("a-1".into()),
                from: Some("a".into()),
                to: Some("b".into()),
                reason: "load 3.0 vs 1.0".into(),
            }
        );
        let joined =
            NewEvent { kind: EventKind::HostJoined, job: None, from: None, to: None, reason: "c is alive".into() };
        let e2 = s.add_event("a", &joined, 200).unwrap();
        let e3 = s.add_event("a", &ev(EventKind::Skipped, Some("a-2"), "holds a socket"), 300).unwrap();
        assert_eq!((e2.seq, e3.seq), (2, 3));
        assert_eq!(s.events(0, 10).unwrap(), vec![e1.clone(), e2.clone(), e3.clone()]);
        assert_eq!(s.events(1, 10).unwrap(), vec![e2.clone(), e3.clone()]);
        assert_eq!(s.events(1, 1).unwrap(), vec![e2.clone()]);
        assert!(s.events(3, 10).unwrap().is_empty());
        assert!(s.events(u64::MAX, 10).unwrap().is_empty());
        assert_eq!(s.last_events(2).unwrap(), vec![e2.clone(), e3.clone()]);
        assert_eq!(s.last_events(99).unwrap(), vec![e1, e2, e3.clone()]);
        assert!(s.last_events(0).unwrap().is_empty());
        assert_eq!(s.events(0, 10).unwrap()[1].job, None);
        // Every kind survives the round trip through the records.
        for k in EventKind::ALL {
            let e = s.add_event("a", &ev(k, None, "r"), 1).unwrap();
            assert_eq!(s.last_events(1).unwrap(), vec![e]);
        }
    }

    #[test]
    fn events_are_bounded() {
        let mut s = Store::open_in_memory().unwrap();
        s.events_kept = 1500;
        for i in 1..=3999u64 {
            s.add_event("a", &ev(EventKind::Moved, None, &i.to_string()), i).unwrap();
        }
        // Pruned at 1000 (nothing yet), 2000 (up to 500) and 3000 (up to 1500).
        let all = s.events(0, 10_000).unwrap();
        assert_eq!((all.len(), all[0].seq, all.last().unwrap().seq), (2499, 1501, 3999));
        let e = s.add_event("a", &ev(EventKind::Moved, None, "4000"), 4000).unwrap();
        assert_eq!(e.seq, 4000);
        let all = s.events(0, 10_000).unwrap();
        assert_eq!((all.len(), all[0].seq), (1500, 2501));
        assert_eq!(s.last_events(1).unwrap()[0].reason, "4000");
        // Sequence numbers never go back, even once older ones are gone.
        assert!(s.events(0, 1).unwrap()[0].seq > 2000);
    }

    #[test]
    fn a_version_1_database_is_upgraded() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO jobs (owner_uid, owner_gid, program, argv, cwd, home, host, state, started_ms, mem_bytes) \
             VALUES (1, 1, 'p', '[]', '/', 'a', 'a', 'running', 1, 1)",
            [],
        )
        .unwrap();
        let s = Store::init(conn).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        let j = s.jobs(true).unwrap();
        assert_eq!((j.len(), j[0].detached, j[0].stay), (1, false, false));
    }

    #[test]
    fn the_host_mode_is_kept() {
        let mut s = Store::open_in_memory().unwrap();
        assert_eq!(s.mode().unwrap(), (HostMode::Normal, None));
        s.set_mode(HostMode::Draining, Some(42)).unwrap();
        assert_eq!(s.mode().unwrap(), (HostMode::Draining, Some(42)));
        s.set_mode(HostMode::Cordoned, None).unwrap();
        assert_eq!(s.mode().unwrap(), (HostMode::Cordoned, None));
        s.conn.execute("UPDATE host SET value = 'sideways' WHERE key = 'mode'", []).unwrap();
        assert!(matches!(s.mode(), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn a_version_2_database_is_upgraded() {
        let conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "foreign_keys", "ON").unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(MIGRATIONS[1]).unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        conn.execute_batch(
            "INSERT INTO jobs (owner_uid, owner_gid, program, argv, cwd, home, host, state, started_ms, mem_bytes, \
             moves, detached) VALUES (1, 1, 'p', '[\"p\"]', '/', 'a', 'c', 'running', 1, 1, 2, 1); \
             INSERT INTO moves (job, from_host, to_host, at_ms, total_ms, downtime_ms, why) \
             VALUES (1, 'a', 'b', 10, 2.0, 0.5, 'operator'); \
             INSERT INTO moves (job, from_host, to_host, at_ms, total_ms, downtime_ms, why) \
             VALUES (1, 'b', 'c', 20, 3.0, 0.7, 'balancer');",
        )
        .unwrap();
        let mut s = Store::init(conn).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        let j = s.jobs(true).unwrap();
        assert_eq!(j.len(), 1);
        assert_eq!((j[0].detached, j[0].stay, j[0].moves, j[0].host.as_str()), (true, false, 2, "c"));
        let hist = s.moves(1).unwrap();
        let got: Vec<_> =
            hist.iter().map(|m| (m.from.as_str(), m.to.as_str(), m.at_ms, m.why, m.reason.clone())).collect();
        assert_eq!(got, vec![("a", "b", 10, MoveWhy::Operator, None), ("b", "c", 20, MoveWhy::Balancer, None)]);
        // The rebuilt table takes the new kinds, keeps numbering on, and
        // still belongs to its job.
        let mv = NewMove {
            from: "c".into(),
            to: "a".into(),
            at_ms: 30,
            total_ms: 1.0,
            downtime_ms: 0.1,
            why: MoveWhy::Drain,
            reason: Some("c drains".into()),
        };
        s.add_move(1, &mv).unwrap();
        let id: i64 = s.conn.query_row("SELECT MAX(id) FROM moves", [], |r| r.get(0)).unwrap();
        assert_eq!(id, 3);
        assert_eq!(s.moves(1).unwrap()[2].reason.as_deref(), Some("c drains"));
        let orphan = s.conn.execute(
            "INSERT INTO moves (job, from_host, to_host, at_ms, total_ms, downtime_ms, why) \
             VALUES (9, 'a', 'b', 1, 1.0, 1.0, 'load')",
            [],
        );
        assert!(orphan.is_err(), "moves still reference jobs");
        let bad_why = s.conn.execute(
            "INSERT INTO moves (job, from_host, to_host, at_ms, total_ms, downtime_ms, why) \
             VALUES (1, 'a', 'b', 1, 1.0, 1.0, 'whim')",
            [],
        );
        assert!(bad_why.is_err());
        let e = s.add_event("a", &ev(EventKind::Moved, Some("a-1"), "r"), 5).unwrap();
        assert_eq!(s.last_events(5).unwrap(), vec![e]);
    }

    #[test]
    fn private_fields_hidden() {
        let mut s = Store::open_in_memory().unwrap();
        let j = s.insert_job(OWNER, &job(), "a", None, 1).unwrap();
        let v = j.view(false, None);
        assert_eq!((v.argv, v.cwd, v.control_sock, v.deputy_pid), (None, None, None, None));
        assert_eq!(v.program, "/bin/true");
        let v = j.view(true, None);
        assert_eq!(v.argv.unwrap().len(), 2);
        assert_eq!(v.deputy_pid, Some(42));
    }

    #[test]
    fn survives_reopen_and_refuses_newer_schema() {
        let dir = std::env::temp_dir().join(format!("mosvm-store-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("jobs.db");
        {
            let mut s = Store::open(&path).unwrap();
            s.insert_job(OWNER, &job(), "a", None, 1).unwrap();
        }
        {
            let s = Store::open(&path).unwrap();
            assert_eq!(s.jobs(true).unwrap().len(), 1);
            s.conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        }
        assert!(matches!(Store::open(&path), Err(StoreError::NewerSchema { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
