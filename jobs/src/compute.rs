//! Team points and competition ranks with DataFusion: a contest's entries
//! and its match's player points registered as Arrow tables, the SQL of
//! `sql/*.sql` run over them under a memory pool that spills sorts to disk.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, AsArray, Int32Array, Int64Array, RecordBatch, StringBuilder, UInt32Array,
    UInt32Builder, UInt8Array, UInt8Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::catalog::MemTable;
use datafusion::common::{exec_err, DataFusionError};
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};
use datafusion::prelude::{SessionConfig, SessionContext};

use leaderboard_core::points::{PlayerPoints, TeamPoints};
use leaderboard_core::team::{Team, TEAM_SIZE, WEIGHT_CAPTAIN, WEIGHT_PLAYER, WEIGHT_VICE_CAPTAIN};

/// The ranking query the recompute runs (the histogram plan).
pub const RANKS_SQL: &str = include_str!("sql/ranks.sql");
/// The same ranks from a global `RANK()` window, for the benchmark only.
pub const WINDOW_SQL: &str = include_str!("sql/window.sql");

/// Rows per Arrow batch of the entries table.
pub const BATCH_ROWS: usize = 64 * 1024;

/// How the engine runs: partitions (cores), the memory pool's size and where
/// sorts spill.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub partitions: usize,
    pub memory_limit: usize,
    pub spill_dir: Option<PathBuf>,
}

impl Default for EngineOptions {
    fn default() -> EngineOptions {
        EngineOptions {
            partitions: std::thread::available_parallelism().map_or(2, usize::from),
            memory_limit: 1 << 30,
            spill_dir: None,
        }
    }
}

/// The `entries` table's schema: ids, the 11 squad indexes, the captain's
/// and vice-captain's slots.
pub fn entries_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("entry_id", DataType::Utf8, false),
        Field::new("user_id", DataType::Utf8, false),
    ];
    fields
        .extend((0..TEAM_SIZE).map(|slot| Field::new(format!("p{slot}"), DataType::UInt32, false)));
    fields.push(Field::new("captain", DataType::UInt8, false));
    fields.push(Field::new("vice_captain", DataType::UInt8, false));
    Arc::new(Schema::new(fields))
}

/// Builds the `entries` table batch by batch.
#[derive(Debug)]
pub struct EntriesBuilder {
    entry_id: StringBuilder,
    user_id: StringBuilder,
    players: Vec<UInt32Builder>,
    captain: UInt8Builder,
    vice_captain: UInt8Builder,
    rows: usize,
    batches: Vec<RecordBatch>,
}

impl Default for EntriesBuilder {
    fn default() -> Self {
        EntriesBuilder::new()
    }
}

impl EntriesBuilder {
    pub fn new() -> EntriesBuilder {
        EntriesBuilder {
            entry_id: StringBuilder::new(),
            user_id: StringBuilder::new(),
            players: (0..TEAM_SIZE).map(|_| UInt32Builder::new()).collect(),
            captain: UInt8Builder::new(),
            vice_captain: UInt8Builder::new(),
            rows: 0,
            batches: Vec::new(),
        }
    }

    pub fn push(&mut self, entry_id: &str, user_id: &str, team: &Team) {
        self.entry_id.append_value(entry_id);
        self.user_id.append_value(user_id);
        for (builder, &player) in self.players.iter_mut().zip(&team.players) {
            builder.append_value(player);
        }
        self.captain.append_value(team.captain);
        self.vice_captain.append_value(team.vice_captain);
        self.rows += 1;
        if self.rows == BATCH_ROWS {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.rows == 0 {
            return;
        }
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.entry_id.finish()),
            Arc::new(self.user_id.finish()),
        ];
        columns.extend(
            self.players
                .iter_mut()
                .map(|builder| Arc::new(builder.finish()) as ArrayRef),
        );
        columns.push(Arc::new(self.captain.finish()));
        columns.push(Arc::new(self.vice_captain.finish()));
        let batch = RecordBatch::try_new(entries_schema(), columns)
            .expect("columns match the entries schema");
        self.batches.push(batch);
        self.rows = 0;
    }

    /// The batches built so far (the last one partial).
    pub fn finish(mut self) -> Vec<RecordBatch> {
        self.flush();
        self.batches
    }
}

/// The `player_points` table: squad index, name, whole points.
pub fn player_points_batch(names: &[String], points: &[PlayerPoints]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("idx", DataType::UInt32, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("points", DataType::Int32, false),
    ]));
    let mut name_column = StringBuilder::new();
    for name in names {
        name_column.append_value(name);
    }
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(UInt32Array::from_iter_values(0..names.len() as u32)),
            Arc::new(name_column.finish()),
            Arc::new(Int32Array::from_iter_values(points.iter().map(|p| p.0))),
        ],
    )
    .expect("columns match the player points schema")
}

/// `team_points(p0, …, p10, captain, vice_captain)`: an entry's team points
/// in half-point units, looked up in the match's player points. A scalar UDF
/// rather than a join of 11 picks to player points: the naive join-and-group
/// plan (110M joined rows at 10M entries) is what made SQL slow; this is the
/// 11 multiply-adds of the domain core, vectorised over each batch, and it
/// runs in every partition at once.
fn team_points_udf(table: Arc<[i32]>) -> datafusion::logical_expr::ScalarUDF {
    let mut inputs = vec![DataType::UInt32; TEAM_SIZE];
    inputs.extend([DataType::UInt8, DataType::UInt8]);
    create_udf(
        "team_points",
        inputs,
        DataType::Int64,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let players: Vec<&UInt32Array> = arrays[..TEAM_SIZE]
                .iter()
                .map(|array| array.as_primitive())
                .collect();
            let captain: &UInt8Array = arrays[TEAM_SIZE].as_primitive();
            let vice_captain: &UInt8Array = arrays[TEAM_SIZE + 1].as_primitive();
            let rows = captain.len();
            let mut out = Vec::with_capacity(rows);
            for row in 0..rows {
                let (c, v) = (
                    captain.value(row) as usize,
                    vice_captain.value(row) as usize,
                );
                let mut halves = 0_i64;
                for (slot, column) in players.iter().enumerate() {
                    let Some(&points) = table.get(column.value(row) as usize) else {
                        return exec_err!(
                            "squad index {} is outside the squad of {}",
                            column.value(row),
                            table.len()
                        );
                    };
                    let weight = if slot == c {
                        WEIGHT_CAPTAIN
                    } else if slot == v {
                        WEIGHT_VICE_CAPTAIN
                    } else {
                        WEIGHT_PLAYER
                    };
                    halves += i64::from(points) * weight;
                }
                out.push(halves);
            }
            Ok(ColumnarValue::Array(Arc::new(Int64Array::from(out))))
        }),
    )
}

/// A session over one contest: its entries and player points registered.
pub struct ContestTables {
    pub context: SessionContext,
}

impl std::fmt::Debug for ContestTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContestTables")
            .field("session", &self.context.session_id())
            .finish()
    }
}

impl ContestTables {
    /// Registers `entries` (spread over the engine's partitions) and the
    /// player points, and binds `team_points` to those points.
    pub fn new(
        options: &EngineOptions,
        entries: Vec<RecordBatch>,
        squad: &[String],
        points: &[PlayerPoints],
    ) -> Result<ContestTables, DataFusionError> {
        let mut runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(options.memory_limit)));
        if let Some(dir) = &options.spill_dir {
            runtime = runtime.with_temp_file_path(dir.clone());
        }
        let config = SessionConfig::new()
            .with_target_partitions(options.partitions.max(1))
            .with_batch_size(8192);
        let context = SessionContext::new_with_config_rt(config, runtime.build_arc()?);
        let partitions = options.partitions.max(1);
        let mut spread: Vec<Vec<RecordBatch>> = vec![Vec::new(); partitions];
        for (index, batch) in entries.into_iter().enumerate() {
            spread[index % partitions].push(batch);
        }
        context.register_table(
            "entries",
            Arc::new(MemTable::try_new(entries_schema(), spread)?),
        )?;
        let players = player_points_batch(squad, points);
        context.register_table(
            "player_points",
            Arc::new(MemTable::try_new(players.schema(), vec![vec![players]])?),
        )?;
        let table: Arc<[i32]> = points.iter().map(|p| p.0).collect();
        context.register_udf(team_points_udf(table));
        Ok(ContestTables { context })
    }

    /// Runs `sql`, streaming its batches.
    pub async fn stream(&self, sql: &str) -> Result<SendableRecordBatchStream, DataFusionError> {
        self.context.sql(sql).await?.execute_stream().await
    }

    /// `EXPLAIN ANALYZE` of `sql`: the physical plan with each operator's
    /// measured rows, time and memory.
    pub async fn explain_analyze(&self, sql: &str) -> Result<String, DataFusionError> {
        let batches = self
            .context
            .sql(sql)
            .await?
            .explain(false, true)?
            .collect()
            .await?;
        let mut text = String::new();
        for batch in &batches {
            let plans = batch.column(1).as_string::<i32>();
            for plan in plans.iter().flatten() {
                text.push_str(plan);
                text.push('\n');
            }
        }
        Ok(text)
    }
}

/// One ranked row of a result batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankedRow<'a> {
    pub entry_id: &'a str,
    pub user_id: &'a str,
    pub points: TeamPoints,
    pub rank: u64,
}

/// The rows of a result batch of `ranks.sql` (entry_id, user_id, points, rank),
/// checked for the shape the query promises.
pub fn ranked_rows(batch: &RecordBatch) -> Result<Vec<RankedRow<'_>>, DataFusionError> {
    if batch.num_columns() != 4 {
        return exec_err!("a ranks batch has {} columns, not 4", batch.num_columns());
    }
    let text = |index: usize| {
        batch
            .column(index)
            .as_string_opt::<i32>()
            .ok_or_else(|| DataFusionError::Execution(format!("column {index} is not text")))
    };
    let number = |index: usize| {
        batch
            .column(index)
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| DataFusionError::Execution(format!("column {index} is not Int64")))
    };
    let (entries, users, points, ranks) = (text(0)?, text(1)?, number(2)?, number(3)?);
    Ok((0..batch.num_rows())
        .map(|row| RankedRow {
            entry_id: entries.value(row),
            user_id: users.value(row),
            points: TeamPoints(points.value(row)),
            rank: ranks.value(row) as u64,
        })
        .collect())
}
