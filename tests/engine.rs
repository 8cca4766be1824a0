//! The event-sourced engine on real files: durable execute, replay after restart, refused
//! commands leave the model unchanged, a panic stops the engine (and its replay) with a clear
//! error, replay is exact for random command sequences (journaled time and seeded random),
//! snapshots plus the journal equal a full replay, time travel, the codec is fixed per store,
//! and domain events reach subscribers.

use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use evring::engine::{Codec, Command, Context, DomainError, Engine, EngineError, Model, Query};
use evring::shard::run_local;
use serde::{Deserialize, Serialize};

#[derive(Default, Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Bank {
    accounts: BTreeMap<u32, u64>,
    last_ns: u64,
    lottery: Vec<u64>,
}
impl Model for Bank {}

#[derive(Serialize, Deserialize)]
struct Deposit {
    account: u32,
    amount: u64,
}
impl Command<Bank> for Deposit {
    const NAME: &'static str = "Deposit";
    type Output = u64;
    fn execute(&self, m: &mut Bank, ctx: &mut Context) -> Result<u64, DomainError> {
        let b = m.accounts.entry(self.account).or_default();
        *b += self.amount;
        m.last_ns = ctx.now_ns();
        // Randomness and time come from the context: replay reproduces them.
        if ctx.random_u64() % 7 == 0 {
            m.lottery.push(ctx.random_u64() % 1000);
        }
        ctx.raise(
            &format!("acct-{}", self.account),
            "Deposited",
            self.amount.to_string(),
        );
        Ok(*b)
    }
}

#[derive(Serialize, Deserialize)]
struct Withdraw {
    account: u32,
    amount: u64,
}
impl Command<Bank> for Withdraw {
    const NAME: &'static str = "Withdraw";
    type Output = u64;
    fn execute(&self, m: &mut Bank, _: &mut Context) -> Result<u64, DomainError> {
        let have = m.accounts.get(&self.account).copied().unwrap_or(0);
        if have < self.amount {
            return Err(DomainError::new(format!(
                "balance {have} < {}",
                self.amount
            )));
        }
        *m.accounts.get_mut(&self.account).expect("checked") -= self.amount;
        Ok(have - self.amount)
    }
}

/// Mutates, then panics: the half-applied state must never be served.
#[derive(Serialize, Deserialize)]
struct Boom;
impl Command<Bank> for Boom {
    const NAME: &'static str = "Boom";
    type Output = ();
    fn execute(&self, m: &mut Bank, _: &mut Context) -> Result<(), DomainError> {
        m.accounts.insert(999, 1);
        panic!("boom in the model");
    }
}

struct Balance(u32);
impl Query<Bank> for Balance {
    type Output = Option<u64>;
    fn run(&self, m: &Bank) -> Option<u64> {
        m.accounts.get(&self.0).copied()
    }
}

async fn open(dir: &Path, codec: Codec) -> Result<Engine<Bank>, EngineError> {
    Engine::<Bank>::builder("bank", *b"evring-bank-test")
        .codec(codec)
        .journal_config(|j| {
            j.segment_bytes = 256 * 1024;
            j.frame_bytes_max = 16 * 1024;
        })
        .command::<Deposit>()
        .command::<Withdraw>()
        .command::<Boom>()
        .open(dir)
        .await
}

fn state(e: &Engine<Bank>) -> Bank {
    e.read(|m| m.clone()).unwrap()
}

#[test]
fn commands_are_durable_replayed_and_refusals_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    run_local(async {
        let e = open(dir.path(), Codec::Json).await.unwrap();
        assert_eq!(
            e.execute(Deposit {
                account: 1,
                amount: 50
            })
            .await
            .unwrap(),
            50
        );
        assert_eq!(
            e.execute(Withdraw {
                account: 1,
                amount: 20
            })
            .await
            .unwrap(),
            30
        );
        let before = state(&e);
        let refused = e
            .execute(Withdraw {
                account: 1,
                amount: 31,
            })
            .await;
        assert!(
            matches!(refused, Err(EngineError::Domain(_))),
            "{refused:?}"
        );
        assert_eq!(
            state(&e),
            before,
            "a refused command leaves the model unchanged"
        );
        assert_eq!(e.query(&Balance(1)).unwrap(), Some(30));
        e.close().await;
        drop(e);
        let e = open(dir.path(), Codec::Json).await.unwrap();
        assert_eq!(state(&e), before, "replay = what was applied");
        e.close().await;
    });
}

#[test]
fn a_panicking_command_stops_the_engine_and_its_replay_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    run_local(async {
        let e = open(dir.path(), Codec::Binary).await.unwrap();
        e.execute(Deposit {
            account: 1,
            amount: 5,
        })
        .await
        .unwrap();
        let err = e.execute(Boom).await.unwrap_err();
        assert!(matches!(err, EngineError::Stopped(_)), "{err}");
        assert!(err.to_string().contains("boom in the model"), "{err}");
        // Nothing is served from the half-applied model.
        assert!(matches!(
            e.query(&Balance(999)),
            Err(EngineError::Stopped(_))
        ));
        let after = e
            .execute(Deposit {
                account: 1,
                amount: 1,
            })
            .await;
        assert!(matches!(after, Err(EngineError::Stopped(_))), "{after:?}");
        e.close().await;
        drop(e);
        let again = open(dir.path(), Codec::Binary).await;
        let err = match again {
            Err(e) => e,
            Ok(_) => panic!("replay must stop at the panicking command"),
        };
        let msg = err.to_string();
        assert!(msg.contains("Boom") && msg.contains("panicked"), "{msg}");
        // The replay's failure is the cause, typed.
        let cause = std::error::Error::source(&err)
            .and_then(|s| s.downcast_ref::<evring::engine::ReplayError>())
            .expect("the replay error is the source");
        assert!(
            matches!(cause, evring::engine::ReplayError::Panicked { name, .. } if name == "Boom"),
            "{cause:?}"
        );
    });
}

#[test]
fn replay_is_exact_for_random_command_sequences_and_time_travel_sees_the_past() {
    for seed in 1..=8u64 {
        let dir = tempfile::tempdir().unwrap();
        run_local(async {
            let e = open(dir.path(), Codec::Binary).await.unwrap();
            let mut rng = seed;
            let mut history: Vec<(u64, Bank)> = vec![(0, Bank::default())];
            // The balances the commands must produce, kept beside the engine.
            let mut balances: BTreeMap<u32, u64> = BTreeMap::new();
            let mut refused = 0;
            for _ in 0..60 + seed * 10 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let account = (rng % 5) as u32;
                let amount = rng % 100;
                let have = balances.get(&account).copied();
                if rng % 3 == 0 {
                    let got = e.execute(Withdraw { account, amount }).await;
                    match have {
                        Some(have) if have >= amount => {
                            assert_eq!(got.unwrap(), have - amount, "seed {seed}");
                            balances.insert(account, have - amount);
                        }
                        _ => {
                            refused += 1;
                            let have = have.unwrap_or(0);
                            match got {
                                Err(EngineError::Domain(d)) => assert_eq!(
                                    d.to_string(),
                                    format!("balance {have} < {amount}"),
                                    "seed {seed}"
                                ),
                                other => panic!("seed {seed}: refusal expected, got {other:?}"),
                            }
                        }
                    }
                } else {
                    let got = e.execute(Deposit { account, amount }).await.unwrap();
                    let new = have.unwrap_or(0) + amount;
                    assert_eq!(got, new, "seed {seed}");
                    balances.insert(account, new);
                }
                assert_eq!(state(&e).accounts, balances, "seed {seed}");
                history.push((e.applied_lsn(), state(&e)));
                if rng % 17 == 0 {
                    e.snapshot(2).await.unwrap();
                }
            }
            assert!(refused > 0, "seed {seed}: no withdrawal was refused");
            // Time travel: the model as of sampled LSNs equals what it was then.
            for (lsn, then) in history.iter().step_by(7) {
                assert_eq!(
                    &e.state_at(*lsn).await.unwrap(),
                    then,
                    "seed {seed} lsn {lsn}"
                );
            }
            let live = state(&e);
            e.close().await;
            drop(e);
            let e = open(dir.path(), Codec::Binary).await.unwrap();
            assert_eq!(
                state(&e),
                live,
                "seed {seed}: restart (snapshot + journal) = live"
            );
            e.close().await;
            drop(e);
            // A full replay (no snapshot) gives the same model.
            for f in std::fs::read_dir(dir.path()).unwrap().flatten() {
                if f.path().extension().is_some_and(|x| x == "snap") {
                    std::fs::remove_file(f.path()).unwrap();
                }
            }
            let e = open(dir.path(), Codec::Binary).await.unwrap();
            assert_eq!(state(&e), live, "seed {seed}: full replay = live");
            e.close().await;
        });
    }
}

#[test]
fn a_store_refuses_the_other_codec() {
    let dir = tempfile::tempdir().unwrap();
    run_local(async {
        let e = open(dir.path(), Codec::Json).await.unwrap();
        e.execute(Deposit {
            account: 1,
            amount: 1,
        })
        .await
        .unwrap();
        e.close().await;
        drop(e);
        let err = match open(dir.path(), Codec::Binary).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("opened with the wrong codec"),
        };
        assert!(
            err.contains("json codec") && err.contains("binary"),
            "{err}"
        );
    });
}

#[test]
fn concurrent_commands_apply_in_lsn_order_and_raise_domain_events() {
    let dir = tempfile::tempdir().unwrap();
    run_local(async {
        let e = Rc::new(open(dir.path(), Codec::Binary).await.unwrap());
        let events = e.subscribe();
        let tasks: Vec<_> = (0..20u32)
            .map(|t| {
                let e = e.clone();
                glommio::spawn_local(async move {
                    for i in 0..25u64 {
                        e.execute(Deposit {
                            account: t % 4,
                            amount: i,
                        })
                        .await
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
        let total: u64 = state(&e).accounts.values().sum();
        assert_eq!(total, 20 * (0..25).sum::<u64>());
        let got: Vec<_> = events.try_iter().collect();
        assert_eq!(got.len(), 500);
        assert!(got.windows(2).all(|w| w[0].lsn < w[1].lsn), "in LSN order");
        assert_eq!(got[0].event_type, "Deposited");
        e.close().await;
    });
}

/// The shared snapshot loader checks an engine's snapshots as it checks a partition's: a
/// newer snapshot file whose header names another store, another LSN than its file name,
/// another partition or another codec is passed over for the next older one. Each forged
/// file holds a real model image with an account (777) this engine never had, so using it
/// would show.
#[test]
fn an_engine_snapshot_of_another_owner_or_lsn_is_passed_over_for_the_older_one() {
    use evring::snapshot::{decode, encode, file_name, list, SnapshotMeta, CODEC_JSON};
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    run_local(async {
        // Another engine of the same store: its snapshot's body is the forger's material.
        let b = open(other.path(), Codec::Binary).await.unwrap();
        for _ in 0..4 {
            b.execute(Deposit {
                account: 777,
                amount: 1,
            })
            .await
            .unwrap();
        }
        let forged_lsn = b.snapshot(10).await.unwrap();
        b.close().await;
        drop(b);
        let (_, forged_path) = list(other.path()).unwrap().remove(0);
        let forged_bytes = std::fs::read(forged_path).unwrap();
        let (meta, body) = decode(&forged_bytes).unwrap();
        let body = body.to_vec();

        let e = open(dir.path(), Codec::Binary).await.unwrap();
        for i in 0..10 {
            e.execute(Deposit {
                account: 1,
                amount: i,
            })
            .await
            .unwrap();
            if i == 1 {
                e.snapshot(10).await.unwrap();
            }
        }
        let older = list(dir.path()).unwrap()[0].0;
        assert!(older < forged_lsn && forged_lsn < e.applied_lsn());
        let live = state(&e);
        e.close().await;
        drop(e);

        let forge = |m: SnapshotMeta| {
            let path = dir.path().join(file_name(forged_lsn));
            std::fs::write(&path, encode(&m, &body)).unwrap();
            path
        };
        // The control: the same forged image with a true header is used (777 shows).
        let path = forge(meta);
        let e = open(dir.path(), Codec::Binary).await.unwrap();
        assert!(
            state(&e).accounts.contains_key(&777),
            "a usable newer snapshot is loaded"
        );
        e.close().await;
        drop(e);
        let cases = [
            (
                "store id",
                SnapshotMeta {
                    store_id: *b"another-store-id",
                    ..meta
                },
            ),
            (
                "header LSN",
                SnapshotMeta {
                    lsn: forged_lsn - 1,
                    ..meta
                },
            ),
            (
                "partition",
                SnapshotMeta {
                    partition: 3,
                    ..meta
                },
            ),
            (
                "codec",
                SnapshotMeta {
                    codec: CODEC_JSON,
                    ..meta
                },
            ),
        ];
        for (what, m) in cases {
            forge(m);
            let e = open(dir.path(), Codec::Binary).await.unwrap();
            assert_eq!(
                state(&e),
                live,
                "a snapshot with another {what} must be passed over for the older one"
            );
            e.close().await;
            drop(e);
        }
        std::fs::remove_file(path).unwrap();
    });
}
