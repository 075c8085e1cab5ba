//! Information dissemination: the bounded load vector and what goes into a
//! gossip message.
//!
//! Every host keeps a small vector of entries about other hosts, each with
//! the time (on this host's clock) at which the information was current.
//! Every period it sends a window of it (its own entry first) to one host;
//! the receiver keeps the newest entry per host and answers with its own
//! window. Entries carry their *age* on the wire, not a timestamp, because
//! hosts do not share a clock. Old entries expire, which is how a host that
//! left disappears. The vector and the window have a fixed size, so message
//! size and rate per host do not depend on the cluster size.
//!
//! Which entries go into a window:
//! - the freshest ones, so news travels fast;
//! - fresh underloaded hosts that some known host could give work to (what
//!   overloaded hosts look for);
//! - a fresh overloaded host that is *seeking* takers (what underloaded
//!   hosts look for);
//! - a random one, so every entry keeps circulating.
//!
//! Extremes are forwarded only while they are useful. An entry that is in
//! every vector also becomes everybody's gossip partner, so forwarding a
//! busy host everywhere would flood it with messages.

use crate::rng::{shuffle, Rng};

/// Identifies a host. Opaque to the balancer: the daemon may pack an
/// IPv4 address and port into it so that every entry says how to reach
/// the host it describes.
pub type HostId = u64;

/// What a host says about itself.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoadInfo {
    /// Runnable threads (smoothed, including moves it has committed to).
    pub runnable: f64,
    /// Cores that run jobs.
    pub cores: u16,
    /// Relative speed of one core.
    pub speed: f64,
    /// Free memory for jobs, bytes (after accepted arrivals).
    pub free_mem: u64,
    /// Whether it takes jobs from other hosts (false when cordoned or
    /// draining).
    pub accepting: bool,
    /// It has jobs it would give away but knows no host to take them:
    /// underloaded hosts may address their gossip to it. A host that already
    /// has takers does not set it, so it does not attract a flood of
    /// messages from every idle host that heard of it.
    pub seeking: bool,
}

impl LoadInfo {
    /// Cores times speed.
    pub fn capacity(&self) -> f64 {
        self.cores.max(1) as f64 * self.speed.max(1e-6)
    }

    /// Normalized load (one CPU-bound job on one reference core = 1).
    pub fn load(&self) -> f64 {
        self.load_with(0.0)
    }

    /// Normalized load with `extra` more runnable threads.
    pub fn load_with(&self, extra: f64) -> f64 {
        (self.runnable.max(0.0) + extra).max(0.0) / self.capacity()
    }

    /// Speed a CPU-bound thread gets here when `extra` more threads run:
    /// processor sharing over the cores.
    pub fn rate_with(&self, extra: f64) -> f64 {
        let k = self.runnable.max(0.0) + extra;
        let c = self.cores.max(1) as f64;
        let share = if k <= c { 1.0 } else { c / k };
        self.speed.max(0.0) * share
    }
}

/// An entry as sent on the wire: how old the information is, not when.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WireEntry {
    pub host: HostId,
    /// Seconds since the information was current, at the sender.
    pub age: f64,
    pub info: LoadInfo,
}

/// An entry as kept in a vector.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Entry {
    pub host: HostId,
    /// When the information was current, on this host's clock.
    pub stamp: f64,
    pub info: LoadInfo,
}

impl Entry {
    pub fn age(&self, now: f64) -> f64 {
        (now - self.stamp).max(0.0)
    }

    pub fn to_wire(&self, now: f64) -> WireEntry {
        WireEntry { host: self.host, age: self.age(now), info: self.info }
    }
}

/// The bounded load vector of one host (entries about *other* hosts; the
/// host's own entry is produced fresh when a window is built).
#[derive(Clone, Debug)]
pub struct LoadVector {
    own: HostId,
    capacity: usize,
    entries: Vec<Entry>,
}

impl LoadVector {
    pub fn new(own: HostId, capacity: usize) -> Self {
        LoadVector { own, capacity: capacity.max(1), entries: Vec::new() }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn get(&self, host: HostId) -> Option<&Entry> {
        self.entries.iter().find(|e| e.host == host)
    }

    /// Offer one entry: kept if it is about another host and newer than what
    /// we have about that host; when the vector is full it replaces the
    /// oldest entry, if it is newer than that one. Returns whether it was
    /// kept.
    pub fn offer(&mut self, e: Entry) -> bool {
        if e.host == self.own || !e.stamp.is_finite() {
            return false;
        }
        if let Some(x) = self.entries.iter_mut().find(|x| x.host == e.host) {
            if e.stamp > x.stamp {
                *x = e;
                return true;
            }
            return false;
        }
        if self.entries.len() < self.capacity {
            self.entries.push(e);
            return true;
        }
        let (i, oldest) =
            self.entries.iter().enumerate().min_by(|a, b| a.1.stamp.total_cmp(&b.1.stamp)).expect("capacity >= 1");
        if e.stamp > oldest.stamp {
            self.entries[i] = e;
            true
        } else {
            false
        }
    }

    /// Merge a received window. Returns how many entries were kept.
    pub fn merge(&mut self, now: f64, incoming: &[WireEntry], hop_delay: f64) -> usize {
        incoming
            .iter()
            .filter(|w| w.age.is_finite())
            .map(|w| self.offer(Entry { host: w.host, stamp: now - w.age.max(0.0) - hop_delay.max(0.0), info: w.info }))
            .filter(|&kept| kept)
            .count()
    }

    /// Drop entries older than `max_age`; returns how many.
    pub fn expire(&mut self, now: f64, max_age: f64) -> usize {
        let before = self.entries.len();
        self.entries.retain(|e| e.age(now) <= max_age);
        before - self.entries.len()
    }

    /// Forget one host (e.g. the daemon could not connect to it).
    pub fn remove(&mut self, host: HostId) {
        self.entries.retain(|e| e.host != host);
    }

    /// The window to send: `own` first, then up to `size - 1` other entries:
    /// the freshest, then extremes that someone can act on (an underloaded
    /// host some known host could give work to; a seeking host some known
    /// host could take work from), then random ones.
    ///
    /// Extremes are only forwarded while they are useful: an entry that is
    /// in every vector also becomes everybody's gossip partner.
    pub fn window(
        &self,
        now: f64,
        own: WireEntry,
        size: usize,
        fresh_age: f64,
        margin: f64,
        rng: &mut dyn Rng,
    ) -> Vec<WireEntry> {
        let mut out = vec![own];
        let want = size.saturating_sub(1).min(self.entries.len());
        if want == 0 {
            return out;
        }
        let n_fresh = want.div_ceil(2).max(1);
        let n_low = (want / 4).max(1);
        let n_high = 1;
        let mut chosen: Vec<usize> = Vec::with_capacity(want);
        let take = |order: &mut dyn Iterator<Item = usize>, k: usize, chosen: &mut Vec<usize>| {
            let mut n = 0;
            for i in order {
                if chosen.len() >= want || n >= k {
                    break;
                }
                if !chosen.contains(&i) {
                    chosen.push(i);
                    n += 1;
                }
            }
        };
        take(&mut self.newest(n_fresh).into_iter(), n_fresh, &mut chosen);

        let mut fresh: Vec<usize> =
            (0..self.entries.len()).filter(|&i| self.entries[i].age(now) <= fresh_age).collect();
        // Loads within a quarter job count as equal and are ordered at
        // random, so that different hosts forward different idle hosts
        // (otherwise everybody learns about, and sends to, the same few).
        shuffle(&mut fresh, rng);
        let mut levels: Vec<(i64, usize)> =
            fresh.iter().map(|&i| ((self.entries[i].info.load() * 4.0).floor() as i64, i)).collect();
        levels.sort_by_key(|&(level, _)| level);
        let infos = || fresh.iter().map(|&i| &self.entries[i].info).chain(std::iter::once(&own.info));
        let max_load = infos().map(|x| x.load()).fold(0.0, f64::max);
        let min_with_one = infos().filter(|x| x.accepting).map(|x| x.load_with(1.0)).fold(f64::INFINITY, f64::min);
        let mut low = levels.iter().map(|&(_, i)| i).filter(|&i| {
            let e = &self.entries[i].info;
            e.accepting && e.load_with(1.0) + margin < max_load
        });
        take(&mut low, n_low, &mut chosen);
        let mut high = levels.iter().rev().map(|&(_, i)| i).filter(|&i| {
            let e = &self.entries[i].info;
            e.seeking && e.load() - margin > min_with_one
        });
        take(&mut high, n_high, &mut chosen);

        // Random picks for the rest, then the freshest remaining if needed.
        let mut tries = 0;
        while chosen.len() < want && tries < 4 * want {
            let i = rng.below(self.entries.len());
            if !chosen.contains(&i) {
                chosen.push(i);
            }
            tries += 1;
        }
        if chosen.len() < want {
            take(&mut self.newest(self.entries.len()).into_iter(), want, &mut chosen);
        }
        out.extend(chosen.into_iter().map(|i| self.entries[i].to_wire(now)));
        out
    }

    /// Indices of the `k` newest entries, newest first. A window needs only
    /// a few, and this runs for every message sent.
    fn newest(&self, k: usize) -> Vec<usize> {
        let mut top: Vec<usize> = Vec::with_capacity(k + 1);
        for (i, e) in self.entries.iter().enumerate() {
            let at = top.partition_point(|&j| self.entries[j].stamp >= e.stamp);
            if at < k {
                top.insert(at, i);
                top.truncate(k);
            }
        }
        top
    }

    /// Whom to gossip with. An underloaded host, with probability
    /// `targeted`, picks one of the fresh entries whose host would want to
    /// give it a job (its load exceeds ours plus one job by more than
    /// `margin`) and says it is seeking takers; otherwise any known host,
    /// uniformly.
    pub fn gossip_target(
        &self,
        now: f64,
        me: &LoadInfo,
        margin: f64,
        targeted: f64,
        fresh_age: f64,
        rng: &mut dyn Rng,
    ) -> Option<HostId> {
        if self.entries.is_empty() {
            return None;
        }
        if targeted > 0.0 && rng.chance(targeted) {
            let mine_plus_one = me.load_with(1.0);
            let givers: Vec<HostId> = self
                .entries
                .iter()
                .filter(|e| e.info.seeking && e.age(now) <= fresh_age && e.info.load() - mine_plus_one > margin)
                .map(|e| e.host)
                .collect();
            if !givers.is_empty() {
                return Some(givers[rng.below(givers.len())]);
            }
        }
        Some(self.entries[rng.below(self.entries.len())].host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    fn info(runnable: f64) -> LoadInfo {
        LoadInfo { runnable, cores: 1, speed: 1.0, free_mem: 1 << 34, accepting: true, seeking: false }
    }

    fn w(host: HostId, age: f64, runnable: f64) -> WireEntry {
        WireEntry { host, age, info: info(runnable) }
    }

    #[test]
    fn merge_keeps_the_newest_entry_per_host() {
        let mut v = LoadVector::new(0, 8);
        assert_eq!(v.merge(100.0, &[w(1, 2.0, 5.0)], 0.0), 1);
        // Older news about host 1 is ignored...
        assert_eq!(v.merge(100.0, &[w(1, 3.0, 9.0)], 0.0), 0);
        assert_eq!(v.get(1).unwrap().info.runnable, 5.0);
        // ... newer news replaces it.
        assert_eq!(v.merge(101.0, &[w(1, 0.5, 1.0)], 0.0), 1);
        let e = v.get(1).unwrap();
        assert_eq!(e.info.runnable, 1.0);
        assert!((e.stamp - 100.5).abs() < 1e-12);
        assert_eq!(v.len(), 1);
    }

    #[test]
    fn own_entry_is_never_stored() {
        let mut v = LoadVector::new(7, 8);
        assert_eq!(v.merge(1.0, &[w(7, 0.0, 3.0)], 0.0), 0);
        assert!(v.is_empty());
    }

    #[test]
    fn full_vector_replaces_the_oldest_only_with_newer() {
        let mut v = LoadVector::new(0, 3);
        v.merge(10.0, &[w(1, 1.0, 1.0), w(2, 5.0, 1.0), w(3, 3.0, 1.0)], 0.0);
        assert_eq!(v.len(), 3);
        // Older than everything: dropped.
        assert_eq!(v.merge(10.0, &[w(4, 6.0, 1.0)], 0.0), 0);
        // Newer than the oldest (host 2): replaces it.
        assert_eq!(v.merge(10.0, &[w(4, 0.0, 1.0)], 0.0), 1);
        assert!(v.get(2).is_none());
        assert!(v.get(4).is_some());
        assert_eq!(v.len(), 3);
    }

    #[test]
    fn entries_expire() {
        let mut v = LoadVector::new(0, 8);
        v.merge(0.0, &[w(1, 0.0, 1.0), w(2, 0.0, 1.0)], 0.0);
        v.merge(6.0, &[w(2, 0.0, 1.0)], 0.0);
        assert_eq!(v.expire(9.0, 5.0), 1);
        assert!(v.get(1).is_none());
        assert!(v.get(2).is_some());
        assert_eq!(v.expire(20.0, 5.0), 1);
        assert!(v.is_empty());
    }

    #[test]
    fn ages_grow_by_the_hop_delay() {
        let mut v = LoadVector::new(0, 8);
        v.merge(10.0, &[w(1, 0.0, 1.0)], 0.01);
        assert!((v.get(1).unwrap().age(10.0) - 0.01).abs() < 1e-12);
    }

    #[test]
    fn window_is_bounded_own_entry_first_no_duplicates() {
        let mut v = LoadVector::new(0, 32);
        let many: Vec<WireEntry> = (1..=40).map(|h| w(h, h as f64 * 0.01, h as f64)).collect();
        v.merge(5.0, &many, 0.0);
        assert_eq!(v.len(), 32);
        let mut rng = SplitMix64::new(3);
        let own = w(0, 0.0, 2.0);
        let win = v.window(5.0, own, 8, 2.0, 0.25, &mut rng);
        assert_eq!(win.len(), 8);
        assert_eq!(win[0].host, 0);
        let mut hosts: Vec<HostId> = win.iter().map(|e| e.host).collect();
        hosts.sort();
        hosts.dedup();
        assert_eq!(hosts.len(), 8);
        // The freshest entry (host 1) is in.
        assert!(win.iter().any(|e| e.host == 1));
    }

    #[test]
    fn window_forwards_useful_extremes_only() {
        let mut v = LoadVector::new(0, 32);
        let mut es: Vec<WireEntry> = (1..=20).map(|h| w(h, 0.1 + h as f64 * 0.01, 2.0)).collect();
        es.push(w(50, 1.5, 0.0)); // idle: hosts at 2 can give it work
        let mut seeker = w(60, 1.5, 5.0); // overloaded and looking for takers
        seeker.info.seeking = true;
        es.push(seeker);
        es.push(w(70, 1.5, 6.0)); // overloaded but already has takers
        v.merge(5.0, &es, 0.0);
        for seed in 0..20 {
            let mut rng = SplitMix64::new(seed);
            // Own + 2 freshest + 1 low + 1 high: no random slot.
            let win = v.window(5.0, w(0, 0.0, 2.0), 5, 2.0, 0.25, &mut rng);
            let hosts: Vec<HostId> = win.iter().map(|e| e.host).collect();
            assert!(hosts.contains(&50), "{hosts:?}");
            assert!(hosts.contains(&60), "{hosts:?}");
            assert!(!hosts.contains(&70), "{hosts:?}");
        }
        // An idle host is no news where nobody could give it work (every
        // known host has one job): it only gets the random slot's chance.
        let mut b = LoadVector::new(0, 32);
        b.merge(5.0, &(1..=20).map(|h| w(h, 0.1 + h as f64 * 0.01, 1.0)).collect::<Vec<_>>(), 0.0);
        b.merge(5.0, &[w(50, 1.5, 0.0)], 0.0);
        let forwarded = (0..200)
            .filter(|&seed| {
                let mut rng = SplitMix64::new(seed);
                b.window(5.0, w(0, 0.0, 1.0), 5, 2.0, 0.25, &mut rng).iter().any(|e| e.host == 50)
            })
            .count();
        // Two random slots among 19 candidates: about 21 in 200.
        assert!(forwarded < 45, "{forwarded} of 200");
    }

    #[test]
    fn underloaded_host_targets_givers() {
        let mut v = LoadVector::new(0, 32);
        let mut entries: Vec<WireEntry> = (1..=20).map(|h| w(h, 0.1, 1.0)).collect();
        let mut giver = w(99, 0.1, 5.0);
        giver.info.seeking = true;
        entries.push(giver);
        // Just as loaded, but it already has takers: not a target.
        entries.push(w(98, 0.1, 5.0));
        v.merge(1.0, &entries, 0.0);
        let me = info(0.0);
        let mut rng = SplitMix64::new(11);
        let hits = (0..1000).filter(|_| v.gossip_target(1.0, &me, 0.25, 0.5, 2.0, &mut rng) == Some(99)).count();
        // About half targeted, plus 1/22 of the random half.
        assert!(hits > 420 && hits < 600, "{hits}");
        let hits98 = (0..1000).filter(|_| v.gossip_target(1.0, &me, 0.25, 0.5, 2.0, &mut rng) == Some(98)).count();
        assert!(hits98 < 60, "{hits98}");
        // A loaded host does not target anyone in particular.
        let busy = info(5.0);
        let hits = (0..1000).filter(|_| v.gossip_target(1.0, &busy, 0.25, 0.5, 2.0, &mut rng) == Some(99)).count();
        assert!(hits < 100, "{hits}");
    }

    #[test]
    fn rate_and_load_follow_processor_sharing() {
        let i = LoadInfo { runnable: 2.0, cores: 4, speed: 1.5, free_mem: 0, accepting: true, seeking: false };
        assert_eq!(i.rate_with(1.0), 1.5);
        assert_eq!(i.rate_with(6.0), 1.5 * 0.5);
        assert!((i.load_with(1.0) - 0.5).abs() < 1e-12);
    }
}
