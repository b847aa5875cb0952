//! The same statements on both databases: SQLite always, PostgreSQL when
//! `TOLLGATE_TEST_DATABASE_URL` is set.

use super::testing::{drop_schema, fresh_schema, postgres_url};
use super::*;

const SCHEMA: &str =
    "CREATE TABLE t (id BIGINT PRIMARY KEY, name TEXT NOT NULL UNIQUE, note TEXT, n BIGINT)";

/// Runs `check` on a fresh SQLite database and, if configured, a fresh PostgreSQL schema.
fn on_both(test: &str, check: impl Fn(&Database)) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    std::fs::File::create(&path).unwrap();
    check(&Database::Sqlite(Arc::new(SqliteDatabase::new(path))));
    if let Some(url) = postgres_url(test) {
        let (scoped, schema) = fresh_schema(&url).unwrap();
        let db = Database::Postgres(Arc::new(PgDatabase::open(&scoped, None, 2).unwrap()));
        check(&db);
        drop(db);
        drop_schema(&url, &schema);
    }
}

#[test]
fn values_round_trip_through_both_dialects() {
    on_both("values_round_trip_through_both_dialects", |db| {
        let c = db.connect().unwrap();
        c.execute_batch(SCHEMA).unwrap();
        let n = c
            .execute(
                "INSERT INTO t (id, name, note, n) VALUES (?1, ?2, ?3, ?4)",
                params![1i64, "a", None::<String>, 42u64],
            )
            .unwrap();
        assert_eq!(n, 1);
        let (name, note, n): (String, Option<String>, u64) = c
            .query_row(
                "SELECT name, note, n FROM t WHERE id = ?1",
                params![1i64],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((name.as_str(), note, n), ("a", None, 42));
        // Bare placeholders count up; booleans come back as integers; sums cast to BIGINT.
        let (flag, sum): (bool, i64) = c
            .query_row(
                "SELECT note IS NULL, CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM t WHERE name = ? AND id = ? GROUP BY note",
                params!["a", 1i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert!(flag);
        assert_eq!(sum, 42);
        let missing = c
            .query_row("SELECT name FROM t WHERE id = ?1", params![2i64], |r| {
                r.get::<String>(0)
            })
            .optional()
            .unwrap();
        assert_eq!(missing, None);
    });
}

#[test]
fn a_dropped_transaction_rolls_back_and_a_committed_one_stays() {
    on_both(
        "a_dropped_transaction_rolls_back_and_a_committed_one_stays",
        |db| {
            let c = db.connect().unwrap();
            c.execute_batch(SCHEMA).unwrap();
            {
                let tx = c.transaction(Behavior::Immediate).unwrap();
                tx.execute("INSERT INTO t (id, name) VALUES (1, 'gone')", params![])
                    .unwrap();
                assert!(tx.in_transaction());
            }
            assert!(!c.in_transaction());
            let tx = c.transaction(Behavior::Journal).unwrap();
            tx.execute("INSERT INTO t (id, name) VALUES (2, 'kept')", params![])
                .unwrap();
            tx.commit().unwrap();
            let names = c
                .query_map("SELECT name FROM t ORDER BY id", params![], |r| {
                    r.get::<String>(0)
                })
                .unwrap();
            assert_eq!(names, vec!["kept".to_owned()]);
        },
    );
}

#[test]
fn a_unique_violation_is_a_constraint_error() {
    on_both("a_unique_violation_is_a_constraint_error", |db| {
        let c = db.connect().unwrap();
        c.execute_batch(SCHEMA).unwrap();
        c.execute(
            "INSERT INTO t (id, name) VALUES (?1, ?2)",
            params![1i64, "x"],
        )
        .unwrap();
        let err = c
            .execute(
                "INSERT INTO t (id, name) VALUES (?1, ?2)",
                params![2i64, "x"],
            )
            .unwrap_err();
        assert!(matches!(err, DbError::Constraint(_)), "{err:?}");
        let skipped = c
            .execute(
                "INSERT INTO t (id, name) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
                params![3i64, "x"],
            )
            .unwrap();
        assert_eq!(skipped, 0);
    });
}

#[test]
fn for_each_stops_when_asked() {
    on_both("for_each_stops_when_asked", |db| {
        let c = db.connect().unwrap();
        c.execute_batch(SCHEMA).unwrap();
        for i in 1..=5i64 {
            c.execute(
                "INSERT INTO t (id, name) VALUES (?1, ?2)",
                params![i, i.to_string()],
            )
            .unwrap();
        }
        let mut seen = Vec::new();
        c.for_each("SELECT id FROM t ORDER BY id", params![], |r| {
            seen.push(r.get::<i64>(0)?);
            Ok::<_, DbError>(seen.len() < 3)
        })
        .unwrap();
        assert_eq!(seen, vec![1, 2, 3]);
        // The connection is still usable after stopping early.
        let count: i64 = c
            .query_row("SELECT COUNT(*) FROM t", params![], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 5);
    });
}
