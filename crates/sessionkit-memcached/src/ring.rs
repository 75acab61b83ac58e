//! Consistent hashing: each server owns 160 points on a 32-bit ring, and a key goes to the
//! first point at or after its hash. Adding a server moves only the keys that land on its
//! points (about 1/(n+1) of them); modulo hashing would move most of them.

use sha2::{Digest, Sha256};

const POINTS_PER_SERVER: usize = 160;

fn point(text: &[u8]) -> u32 {
    let digest = Sha256::digest(text);
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// Which server holds which key.
#[derive(Debug, Clone)]
pub(crate) struct Ring {
    points: Vec<(u32, usize)>,
}

impl Ring {
    /// A ring over servers named by their addresses (the names decide the points, so the same
    /// address keeps its keys whatever else is added).
    pub(crate) fn new(servers: &[String]) -> Self {
        let mut points: Vec<(u32, usize)> = servers
            .iter()
            .enumerate()
            .flat_map(|(index, name)| {
                (0..POINTS_PER_SERVER)
                    .map(move |i| (point(format!("{name}#{i}").as_bytes()), index))
            })
            .collect();
        points.sort_unstable();
        Self { points }
    }

    /// The index of the server for `key`.
    pub(crate) fn server_for(&self, key: &str) -> usize {
        let hash = point(key.as_bytes());
        let at = self.points.partition_point(|(p, _)| *p < hash);
        self.points
            .get(at)
            .or_else(|| self.points.first())
            .map_or(0, |(_, server)| *server)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_a_server_moves_about_a_third_of_the_keys_and_only_to_it() {
        let two: Vec<String> = vec!["127.0.0.1:11211".into(), "127.0.0.1:11212".into()];
        let mut three = two.clone();
        three.push("127.0.0.1:11213".into());
        let (before, after) = (Ring::new(&two), Ring::new(&three));
        let keys: Vec<String> = (0..20_000)
            .map(|i| format!("sessionkit:{i:064x}"))
            .collect();
        let moved: Vec<&String> = keys
            .iter()
            .filter(|k| before.server_for(k) != after.server_for(k))
            .collect();
        let fraction = moved.len() as f64 / keys.len() as f64;
        assert!((0.2..0.45).contains(&fraction), "moved {fraction}");
        assert!(
            moved.iter().all(|k| after.server_for(k) == 2),
            "keys only move to the new server"
        );
        let on_first =
            keys.iter().filter(|k| before.server_for(k) == 0).count() as f64 / keys.len() as f64;
        assert!((0.35..0.65).contains(&on_first), "balanced: {on_first}");
    }

    #[test]
    fn one_server_takes_everything() {
        let ring = Ring::new(&["only:11211".into()]);
        assert!((0..100).all(|i| ring.server_for(&i.to_string()) == 0));
    }
}
