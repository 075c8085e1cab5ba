//! A small tokio program of the kind users run: a multi-threaded runtime,
//! tasks, channels, timers, a pipe of its own (mio's epoll and eventfd
//! waker) and files through the blocking pool. Its output is deterministic
//! so that a run in a job can be compared byte for byte with a native one.
//!
//! `tokio-job [ROUNDS] [DIR] [PAUSE_MS]`: ROUNDS rounds of work (default
//! 20); files are written in DIR (default: the working directory); after
//! the first line, every thread idles PAUSE_MS (the runtime waits in
//! epoll_wait for its timer: a move catches it there).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| ".".into()));
    let pause: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);

    // Tasks exchange work over channels.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(4);
    let producer = tokio::spawn(async move {
        for i in 0..rounds {
            tokio::time::sleep(Duration::from_millis(5)).await;
            tx.send(i * i).await.unwrap();
        }
    });
    let mut sum = 0u64;
    while let Some(v) = rx.recv().await {
        sum += v;
    }
    producer.await.unwrap();
    println!("squares of 0..{rounds} sum to {sum}");
    if pause > 0 {
        let start = tokio::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(pause)).await;
        println!("paused at least {pause} ms: {}", start.elapsed() >= Duration::from_millis(pause));
    }

    // CPU work on the workers, joined in order.
    let tasks: Vec<_> = (0..8u64)
        .map(|t| {
            tokio::spawn(async move {
                let mut h = t.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                for i in 0..200_000 * rounds {
                    h = (h ^ i).wrapping_mul(0x100_0000_01b3);
                    if i % 100_000 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                h
            })
        })
        .collect();
    for (t, task) in tasks.into_iter().enumerate() {
        println!("task {t}: {:016x}", task.await.unwrap());
    }

    // A pipe driven by the reactor (epoll).
    let (mut w, mut r) = tokio::net::unix::pipe::pipe().unwrap();
    let writer = tokio::spawn(async move {
        for i in 0..rounds {
            w.write_all(format!("line {i}\n").as_bytes()).await.unwrap();
        }
    });
    let mut got = String::new();
    let reader = tokio::spawn(async move {
        r.read_to_string(&mut got).await.unwrap();
        got
    });
    writer.await.unwrap();
    let got = reader.await.unwrap();
    println!("pipe carried {} lines", got.lines().count());

    // Files through the blocking pool.
    let path = dir.join("tokio-job.out");
    tokio::fs::write(&path, format!("sum {sum}\n")).await.unwrap();
    let back = tokio::fs::read_to_string(&path).await.unwrap();
    print!("file says: {back}");

    // Timers keep their order (100 ms apart: a loaded machine may hold
    // the runtime's thread back for tens of ms, and timers that expired
    // together complete in any order, natively too).
    let start = tokio::time::Instant::now();
    let mut order = Vec::new();
    let mut set = tokio::task::JoinSet::new();
    for ms in [300u64, 100, 200] {
        set.spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            ms
        });
    }
    while let Some(ms) = set.join_next().await {
        order.push(ms.unwrap());
    }
    println!(
        "timers fired in order {order:?}, after at least {} ms",
        if start.elapsed() >= Duration::from_millis(300) { 300 } else { 0 }
    );
}
