//! Views: read models that transactional listeners build from facts, and that the operator
//! tool rebuilds from the start of their topics (`atoll view rebuild <group>`).
//!
//! A listener declares the tables it writes (`#[listener(name = "…", view = "order_status")]`).
//! At start, each such listener's consumer group, topic and tables are registered in
//! `atoll_views`, so the operator tool learns from the database alone what to empty and which
//! groups to rewind. Listeners whose tables overlap are rebuilt together: emptying a table that
//! another listener also fed would lose that listener's rows for good.

use std::collections::BTreeSet;

use sqlx::AssertSqlSafe;

use atoll_naming::check_table;

use super::{now_ms, Store};
use crate::error::{Error, Result};

/// One listener feeding a view: its consumer group and the topic it reads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ViewFeed {
    /// The listener's consumer group.
    pub group: String,
    /// The topic it consumes.
    pub topic: String,
}

/// What rebuilding a view touches: every listener that feeds one of its tables, and the
/// tables. Found with [`Store::view`]; emptied with [`Store::reset_view`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// The listeners to rewind to the start of their topics, by group.
    pub feeds: Vec<ViewFeed>,
    /// The tables to empty.
    pub tables: Vec<String>,
}

impl View {
    /// `Err` naming a table that is not a plain identifier: the reset names its tables in
    /// SQL, so a registry row written by hand cannot smuggle SQL in.
    ///
    /// # Errors
    /// [`Error::Config`] naming the table.
    pub fn check(&self) -> Result<()> {
        self.tables
            .iter()
            .try_for_each(|t| check_table(t).map_err(Error::Config))
    }
}

/// One registered listener: group, topic, tables.
type Row = (String, String, Vec<String>);

/// What a view's reset does with its tables.
#[derive(Debug, Clone, Copy)]
enum Tables {
    /// Empties them: the view is rebuilt from the start of its topics.
    Emptied,
    /// Keeps them: the facts from a time on are applied over them; the inbox rows of records
    /// handled since `handled_since` (Unix ms) are forgotten.
    Kept {
        /// Unix ms.
        handled_since: i64,
    },
}

/// How far apart the clocks of a record's producer and of the service handling it may be,
/// for [`Store::reopen_view`]: a record written at a time was handled no earlier than this
/// before it.
const CLOCK_SKEW_MS: i64 = 60_000;

/// The view that `group` feeds, grown to every listener sharing a table with it (and so on):
/// `None` when `group` feeds no registered view.
fn closure(rows: &[Row], group: &str) -> Option<View> {
    rows.iter().find(|(g, _, _)| g == group)?;
    let mut groups = BTreeSet::from([group.to_owned()]);
    let mut tables = BTreeSet::new();
    loop {
        let before = (groups.len(), tables.len());
        for (g, _, ts) in rows {
            if groups.contains(g) || ts.iter().any(|t| tables.contains(t)) {
                groups.insert(g.clone());
                tables.extend(ts.iter().cloned());
            }
        }
        if (groups.len(), tables.len()) == before {
            break;
        }
    }
    let feeds = rows
        .iter()
        .filter(|(g, _, _)| groups.contains(g))
        .map(|(group, topic, _)| ViewFeed {
            group: group.clone(),
            topic: topic.clone(),
        })
        .collect();
    Some(View {
        feeds,
        tables: tables.into_iter().collect(),
    })
}

fn failed(what: &str) -> impl FnOnce(sqlx::Error) -> Error + '_ {
    move |source| Error::Store {
        what: what.to_owned(),
        source,
    }
}

/// Records the views a service's listeners feed, as `(group, topic, tables)`, replacing what
/// the service recorded before: a view listener it no longer declares leaves the registry, so
/// a rebuild never rewinds it or empties tables that are gone.
pub(crate) async fn register(
    store: &Store,
    service: &str,
    views: &[(String, String, &[&str])],
) -> Result<()> {
    let mut tx = store
        .pool()
        .begin()
        .await
        .map_err(failed("registering views"))?;
    let prefix = format!("{service}-");
    sqlx::query("DELETE FROM atoll_views WHERE SUBSTR(consumer_group, 1, $1) = $2")
        .bind(i32::try_from(prefix.len()).unwrap_or(i32::MAX))
        .bind(&prefix)
        .execute(&mut *tx)
        .await
        .map_err(failed("registering views"))?;
    for (group, topic, tables) in views {
        sqlx::query(
            // Another process of the service may register the same views at the same time.
            "INSERT INTO atoll_views (consumer_group, topic, view_tables, registered_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (consumer_group) DO UPDATE SET topic = excluded.topic,
                 view_tables = excluded.view_tables, registered_at = excluded.registered_at",
        )
        .bind(group)
        .bind(topic)
        .bind(tables.join(","))
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(failed("registering views"))?;
    }
    tx.commit().await.map_err(failed("registering views"))
}

impl Store {
    /// Every consumer group that feeds a registered view, sorted.
    ///
    /// # Errors
    /// [`Error::Store`] when the database cannot be read.
    pub async fn view_groups(&self) -> Result<Vec<String>> {
        Ok(self
            .view_rows()
            .await?
            .into_iter()
            .map(|(g, _, _)| g)
            .collect())
    }

    /// The view `group` feeds, with every listener that shares one of its tables: what
    /// `atoll view rebuild` rewinds and empties. `None` when `group` feeds no view.
    ///
    /// # Errors
    /// [`Error::Store`] when the database cannot be read.
    pub async fn view(&self, group: &str) -> Result<Option<View>> {
        Ok(closure(&self.view_rows().await?, group))
    }

    /// Empties the view's tables and forgets its listeners' inbox rows, in one transaction,
    /// so that the records, delivered again from the start, are handled again. Rewind the
    /// listeners' offsets first, with the service stopped: should this fail, the records
    /// delivered again are skipped as repeats and the view stays as it was.
    ///
    /// # Errors
    /// [`Error::Store`] when the database fails; nothing is changed then.
    pub async fn reset_view(&self, view: &View) -> Result<()> {
        self.forget_view(view, Tables::Emptied).await
    }

    /// Keeps the view's tables and forgets the inbox rows its listeners wrote for records
    /// handled at or after `since_ms` (Unix ms; less a minute, for the clocks of the records'
    /// producers and of the service), so that the records written since then, delivered again
    /// (the listeners' offsets moved back to that time), are applied over the view as it is:
    /// for views whose handlers set what a fact says (upserts), not for those that add to what
    /// is there. Rows of records handled before stay, so a record delivered again from before
    /// the time (a partition its group had committed nothing on) is still skipped as a repeat.
    /// Move the offsets first, with the service stopped.
    ///
    /// # Errors
    /// [`Error::Store`] when the database fails; nothing is changed then.
    pub async fn reopen_view(&self, view: &View, since_ms: i64) -> Result<()> {
        let handled_since = since_ms.saturating_sub(CLOCK_SKEW_MS);
        self.forget_view(view, Tables::Kept { handled_since }).await
    }

    async fn forget_view(&self, view: &View, tables: Tables) -> Result<()> {
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(failed("beginning a transaction"))?;
        view.check()?;
        let handled_since = match tables {
            Tables::Emptied => i64::MIN,
            Tables::Kept { handled_since } => handled_since,
        };
        if let Tables::Emptied = tables {
            for table in &view.tables {
                sqlx::query(AssertSqlSafe(format!("DELETE FROM {table}")))
                    .execute(&mut *tx)
                    .await
                    .map_err(failed(&format!("emptying view table `{table}`")))?;
            }
        }
        for feed in &view.feeds {
            sqlx::query("DELETE FROM atoll_inbox WHERE consumer_group = $1 AND received_at >= $2")
                .bind(&feed.group)
                .bind(handled_since)
                .execute(&mut *tx)
                .await
                .map_err(failed("forgetting the view's inbox rows"))?;
        }
        tx.commit()
            .await
            .map_err(failed("committing the view's reset"))
    }

    async fn view_rows(&self) -> Result<Vec<Row>> {
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT consumer_group, topic, view_tables FROM atoll_views ORDER BY consumer_group",
        )
        .fetch_all(self.pool())
        .await
        .map_err(failed("reading the registered views"))?;
        Ok(rows
            .into_iter()
            .map(|(g, t, tables)| (g, t, tables.split(',').map(str::to_owned).collect()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(group: &str, tables: &[&str]) -> Row {
        (
            group.into(),
            format!("{group}.topic"),
            tables.iter().map(|t| (*t).to_owned()).collect(),
        )
    }

    fn groups(view: &View) -> Vec<&str> {
        view.feeds.iter().map(|f| f.group.as_str()).collect()
    }

    /// The groups and tables of a view.
    type Want = (&'static [&'static str], &'static [&'static str]);

    #[test]
    fn a_view_grows_to_every_listener_sharing_a_table() {
        let rows = [
            row("a", &["orders"]),
            row("b", &["orders", "lines"]),
            row("c", &["lines"]),
            row("d", &["stock"]),
        ];
        #[rustfmt::skip]
        let table: &[(&str, Option<Want>)] = &[
            ("a", Some((&["a", "b", "c"], &["lines", "orders"]))),
            ("c", Some((&["a", "b", "c"], &["lines", "orders"]))),
            ("d", Some((&["d"], &["stock"]))),
            ("unknown", None),
        ];
        for (group, want) in table {
            let got = closure(&rows, group);
            let got = got.as_ref().map(|v| (groups(v), v.tables.clone()));
            let want = want.map(|(g, t)| {
                (
                    g.to_vec(),
                    t.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
                )
            });
            assert_eq!(got, want, "{group}");
        }
    }

    #[test]
    fn view_tables_are_plain_identifiers() {
        for ok in ["order_status", "_t", "v2"] {
            assert!(check_table(ok).is_ok(), "{ok}");
        }
        for bad in ["", "2v", "orders; DROP TABLE x", "a.b", "naïve"] {
            assert!(check_table(bad).is_err(), "{bad}");
        }
    }
}
