//! Job records in SQLite: every job this host is home to, with its moves.
//! The schema is versioned with `PRAGMA user_version`; opening a database
//! applies the migrations it lacks, and refuses one written by a newer
//! release rather than guess at it.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::api::{JobState, JobView, MoveView, MoveWhy, NewJob, NewMove, StateChange};

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
];

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
        }
    }
}

pub struct Store {
    conn: Connection,
}

const JOB_COLUMNS: &str = "id, owner_uid, owner_gid, program, argv, cwd, control_sock, deputy_addr, deputy_pid, \
     deputy_start, home, host, state, moving_to, started_ms, ended_ms, exit_status, lost_reason, mem_bytes, moves, \
     detached";

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
        let mut store = Store { conn };
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
             deputy_start, home, host, state, started_ms, mem_bytes) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, 'running', ?11, ?12)",
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
             detached) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, 'running', ?7, ?8, 1)",
            params![owner.uid, owner.gid, job.program, argv, job.cwd, home, now_ms as i64, job.mem_bytes as i64],
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
    pub fn adopt(&mut self, id: u64, job: &NewJob) -> Result<JobRecord, StoreError> {
        let argv = serde_json::to_string(&job.argv).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.conn.execute(
            "UPDATE jobs SET program = ?2, argv = ?3, cwd = ?4, control_sock = ?5, deputy_addr = ?6, mem_bytes = ?7 \
             WHERE id = ?1",
            params![id as i64, job.program, argv, job.cwd, job.control_sock, job.deputy_addr, job.mem_bytes as i64],
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
            "INSERT INTO moves (job, from_host, to_host, at_ms, total_ms, downtime_ms, why) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![id as i64, mv.from, mv.to, mv.at_ms as i64, mv.total_ms, mv.downtime_ms, mv.why.as_str()],
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
            "SELECT from_host, to_host, at_ms, total_ms, downtime_ms, why FROM moves WHERE job = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([id as i64], |r| {
            let why: String = r.get(5)?;
            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)?, r.get(3)?, r.get(4)?, why))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (from, to, at, total_ms, downtime_ms, why) = row?;
            let why = MoveWhy::parse(&why).ok_or_else(|| StoreError::Corrupt(format!("move reason {why:?}")))?;
            out.push(MoveView { from, to, at_ms: at as u64, total_ms, downtime_ms, why });
        }
        Ok(out)
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
        };
        let j = s.add_move(1, &mv).unwrap();
        assert_eq!((j.state, j.host.as_str(), j.moves, j.moving_to), (JobState::Running, "b", 1, None));
        assert_eq!(s.running_by_host().unwrap(), vec![("b".to_string(), 1)]);
        let hist = s.moves(1).unwrap();
        assert_eq!(hist.len(), 1);
        assert_eq!((hist[0].total_ms, hist[0].why), (3.5, MoveWhy::Operator));
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
        assert_eq!((j.len(), j[0].detached), (1, false));
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
