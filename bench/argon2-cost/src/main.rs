//! `umbra-bench-argon2-cost M_KIB T P [N]`: times argon2id verification of a
//! PHC hash made with these parameters, as the controller's login does
//! (`Argon2::default().verify_password`, parameters from the PHC string).
//!
//! Prints the single-threaded time per verification (median of N) and the
//! throughput with one thread per CPU (N verifications per thread), which is
//! the argon2 bound on the login rate of this machine.

use std::time::Instant;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};

fn main() {
    let args: Vec<u32> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numeric arguments: M_KIB T P [N]"))
        .collect();
    let (m, t, p) = (args[0], args[1], args[2]);
    let n = args.get(3).copied().unwrap_or(20) as usize;
    let params = Params::new(m, t, p, None).expect("argon2 parameters");
    let password = b"correct horse battery staple";
    let phc = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password)
        .expect("hash")
        .to_string();
    let verify = || {
        let hash = PasswordHash::new(&phc).expect("phc");
        assert!(Argon2::default().verify_password(password, &hash).is_ok());
    };
    verify(); // warm up
    let mut times: Vec<f64> = (0..n)
        .map(|_| {
            let t0 = Instant::now();
            verify();
            t0.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| (0..n).for_each(|_| verify()));
        }
    });
    let wall = t0.elapsed().as_secs_f64();
    let prefix: Vec<&str> = phc.split('$').take(4).collect();
    println!(
        "argon2id verify     : {} -- 1 thread: median {:.1} ms, min {:.1} ms (n={n}); \
         {threads} threads: {:.1} verifications/s",
        prefix.join("$"),
        times[n / 2],
        times[0],
        (threads * n) as f64 / wall
    );
}
