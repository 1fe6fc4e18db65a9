//! The test entity: `CREATE TABLE <name> (id int PRIMARY KEY, v text NOT NULL)`.
#![allow(dead_code)]

use sea_orm::entity::prelude::*;
use sea_orm::TransactionTrait;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sea_kv")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i32,
    pub v: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

pub const CREATE: &str = "CREATE TABLE IF NOT EXISTS sea_kv (id int PRIMARY KEY, v text NOT NULL)";

/// One request of task `i`: an insert, a find by key, a transaction (update + insert), a range find. Its
/// keys are `100_000 + 100 * i + 1..=2`, so each statement's log line names its task by its parameters.
pub async fn request<C>(db: &C, i: u32, round: u32) -> Result<(), DbErr>
where
    C: ConnectionTrait + TransactionTrait,
{
    use sea_orm::{ActiveModelTrait, QueryFilter, Set};
    let base = key(i, round);
    ActiveModel { id: Set(base + 1), v: Set(format!("t{i}")) }.insert(db).await?;
    let found = Entity::find_by_id(base + 1).one(db).await?;
    assert_eq!(found.map(|m| m.v), Some(format!("t{i}")));
    db.transaction::<_, _, DbErr>(|txn| {
        Box::pin(async move {
            ActiveModel { id: Set(base + 1), v: Set(format!("t{i}-updated")) }.update(txn).await?;
            ActiveModel { id: Set(base + 2), v: Set(format!("t{i}")) }.insert(txn).await?;
            Ok(())
        })
    })
    .await
    .map_err(|e| DbErr::Custom(e.to_string()))?;
    let rows = Entity::find().filter(Column::Id.between(base, base + 99)).all(db).await?;
    assert_eq!(rows.len(), 2);
    Ok(())
}

/// The first key of task `i`'s request `round`.
pub fn key(i: u32, round: u32) -> i32 {
    (100_000 + 10_000 * round + 100 * i) as i32
}

/// (round, task, offset) of the key among a log line's parameters (`detail: parameters: $1 = '…', …`).
pub fn task_of(detail: &str) -> Option<(u32, u32, u32)> {
    detail
        .split('\'')
        .skip(1)
        .step_by(2)
        .filter_map(|v| v.parse::<u32>().ok())
        .find(|&n| n >= 100_000)
        .map(|n| ((n - 100_000) / 10_000, (n - 100_000) % 10_000 / 100, n % 100))
}
