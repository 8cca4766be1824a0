//! LoyaltyDB, the example from Memstate's README, on evring's engine: customers with loyalty
//! points, `InitCustomer` and `TransferPoints` commands, a query. The commands are journaled
//! durably; the second half restarts the engine from disk and checks the state survived.
//!
//! Its standard output is what Memstate's example prints (`tests/examples.rs` compares them):
//!
//! ```text
//! Customer[10] balance 10 points.
//! Customer[20] balance 20 points.
//! Sent 5 points. | Sender, Customer[10] balance 5 points. | Recipient, Customer[20] balance 25 points.
//! ```
//!
//! The state after the restart goes to standard error.
//!
//! ```sh
//! cargo run --release --example loyalty            # a fresh store in a temporary directory
//! cargo run --release --example loyalty -- DIR     # a store in DIR (run it twice)
//! ```

use std::collections::BTreeMap;
use std::fmt;

use evring::engine::{Command, Context, DomainError, Engine, Model, Query};
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct LoyaltyDb {
    customers: BTreeMap<u32, Customer>,
}
impl Model for LoyaltyDb {}

#[derive(Clone, Serialize, Deserialize)]
struct Customer {
    id: u32,
    points: u64,
}

impl fmt::Display for Customer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Customer[{}] balance {} points.", self.id, self.points)
    }
}

#[derive(Serialize, Deserialize)]
struct InitCustomer {
    customer_id: u32,
    points: u64,
}

impl Command<LoyaltyDb> for InitCustomer {
    const NAME: &'static str = "InitCustomer";
    type Output = Customer;
    fn execute(&self, db: &mut LoyaltyDb, _: &mut Context) -> Result<Customer, DomainError> {
        // Check, then mutate.
        if db.customers.contains_key(&self.customer_id) {
            return Err(DomainError::new(format!(
                "customer {} already exists",
                self.customer_id
            )));
        }
        let c = Customer {
            id: self.customer_id,
            points: self.points,
        };
        db.customers.insert(c.id, c.clone());
        Ok(c)
    }
}

#[derive(Serialize, Deserialize)]
struct TransferPoints {
    sender_id: u32,
    recipient_id: u32,
    points: u64,
}

struct TransferResult {
    sender: Customer,
    recipient: Customer,
    points: u64,
}

impl fmt::Display for TransferResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Sent {} points. | Sender, {} | Recipient, {}",
            self.points, self.sender, self.recipient
        )
    }
}

impl Command<LoyaltyDb> for TransferPoints {
    const NAME: &'static str = "TransferPoints";
    type Output = TransferResult;
    fn execute(
        &self,
        db: &mut LoyaltyDb,
        ctx: &mut Context,
    ) -> Result<TransferResult, DomainError> {
        let have = |id: u32| {
            db.customers
                .get(&id)
                .map(|c| c.points)
                .ok_or_else(|| DomainError::new(format!("no customer {id}")))
        };
        let balance = have(self.sender_id)?;
        have(self.recipient_id)?;
        if balance < self.points {
            return Err(DomainError::new(format!(
                "customer {} has {balance} points, not {}",
                self.sender_id, self.points
            )));
        }
        db.customers
            .get_mut(&self.sender_id)
            .expect("checked")
            .points -= self.points;
        db.customers
            .get_mut(&self.recipient_id)
            .expect("checked")
            .points += self.points;
        ctx.raise(
            "loyalty",
            "PointsTransferred",
            format!("{}->{}:{}", self.sender_id, self.recipient_id, self.points),
        );
        Ok(TransferResult {
            sender: db.customers[&self.sender_id].clone(),
            recipient: db.customers[&self.recipient_id].clone(),
            points: self.points,
        })
    }
}

struct GetCustomer(u32);

impl Query<LoyaltyDb> for GetCustomer {
    type Output = Option<Customer>;
    fn run(&self, db: &LoyaltyDb) -> Option<Customer> {
        db.customers.get(&self.0).cloned()
    }
}

async fn open(dir: &std::path::Path) -> Engine<LoyaltyDb> {
    Engine::<LoyaltyDb>::builder("loyalty", *b"loyalty-example!")
        .journal_config(|j| {
            j.segment_bytes = 4 << 20;
            j.frame_bytes_max = 64 << 10;
        })
        .command::<InitCustomer>()
        .command::<TransferPoints>()
        .open(dir)
        .await
        .expect("open the loyalty store")
}

fn main() {
    let temp;
    let dir = match std::env::args().nth(1) {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            temp = tempfile::tempdir().expect("a temporary directory");
            temp.path().to_path_buf()
        }
    };
    evring::shard::run_local(async move {
        let engine = open(&dir).await;
        if engine.query(&GetCustomer(10)).unwrap().is_none() {
            let c = engine
                .execute(InitCustomer {
                    customer_id: 10,
                    points: 10,
                })
                .await
                .unwrap();
            println!("{c}");
            let c = engine
                .execute(InitCustomer {
                    customer_id: 20,
                    points: 20,
                })
                .await
                .unwrap();
            println!("{c}");
            let r = engine
                .execute(TransferPoints {
                    sender_id: 10,
                    recipient_id: 20,
                    points: 5,
                })
                .await
                .unwrap();
            println!("{r}");
        } else {
            println!("(the store in {} already has customers)", dir.display());
        }
        engine.close().await;
        drop(engine);
        // A restart: a new engine on the same directory replays the journal.
        let engine = open(&dir).await;
        let a = engine
            .query(&GetCustomer(10))
            .unwrap()
            .expect("customer 10");
        let b = engine
            .query(&GetCustomer(20))
            .unwrap()
            .expect("customer 20");
        // Memstate's example ends with the transfer; this line is evring's own.
        eprintln!("After a restart: {a} | {b}");
        engine.close().await;
    });
}
