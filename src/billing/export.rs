//! Bill exports: CSV (one row per line, RFC 4180) with a parser for round trips, and an aligned
//! plain-text table for the terminal.
//!
//! Owns the export formats only; it must not compute anything (amounts come from the `Bill`).
//!
//! CSV columns: `payer_account_id,month,status,account_id,account_name,billed_to,service,
//! action,unit,quantity,amount,original_month,prices_from` (`original_month` is empty except on
//! adjustment lines, `prices_from` except on lines whose prices changed within the month).
//! Rows end in CRLF; a field holding `,`, `"`, CR or LF is quoted with `"` doubled. An account
//! name starting with `=`, `+`, `-`, `@`, TAB or CR gets a leading `'` so a spreadsheet never
//! runs it as a formula (OWASP's CSV-injection advice); the parser keeps that `'`.

use std::fmt::Write as _;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;

use super::bill::{Bill, BillStatus, CURRENCY, Unit};
use super::money::Money;
use super::month::BillingMonth;
use crate::ids::AccountId;

/// The CSV header, in column order.
pub const CSV_COLUMNS: [&str; 13] = [
    "payer_account_id",
    "month",
    "status",
    "account_id",
    "account_name",
    "billed_to",
    "service",
    "action",
    "unit",
    "quantity",
    "amount",
    "original_month",
    "prices_from",
];

/// One CSV row, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvRow {
    pub payer_account_id: AccountId,
    pub month: BillingMonth,
    pub status: BillStatus,
    pub account_id: AccountId,
    pub account_name: String,
    pub billed_to: AccountId,
    pub service: String,
    pub action: String,
    pub unit: Unit,
    pub quantity: Decimal,
    pub amount: Money,
    pub original_month: Option<BillingMonth>,
    /// On a line whose prices changed within its month (SPEC M4): RFC 3339, UTC.
    pub prices_from: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    #[error("line {line}: unterminated quoted field")]
    Unterminated { line: usize },
    #[error("line {line}: unexpected character after a closing quote")]
    AfterQuote { line: usize },
    #[error("the header is not `{expected}`")]
    Header { expected: String },
    #[error("row {row}: expected {expected} fields, found {found}")]
    FieldCount {
        row: usize,
        expected: usize,
        found: usize,
    },
    #[error("row {row}: invalid `{column}` `{value}`")]
    Field {
        row: usize,
        column: &'static str,
        value: String,
    },
}

/// The bill's lines as CSV, header first.
pub fn to_csv(bill: &Bill) -> String {
    let mut out = String::new();
    write_record(&mut out, CSV_COLUMNS.iter().map(|c| c.to_string()));
    for row in rows(bill) {
        write_record(
            &mut out,
            [
                row.payer_account_id.to_string(),
                row.month.to_string(),
                row.status.to_string(),
                row.account_id.to_string(),
                neutralize_formula(&row.account_name),
                row.billed_to.to_string(),
                row.service,
                row.action,
                row.unit.to_string(),
                row.quantity.normalize().to_string(),
                row.amount.to_string(),
                row.original_month
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
                row.prices_from
                    .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
                    .unwrap_or_default(),
            ],
        );
    }
    out
}

/// The rows [`to_csv`] writes, typed (before formula neutralization).
pub fn rows(bill: &Bill) -> Vec<CsvRow> {
    bill.accounts
        .iter()
        .flat_map(|account| {
            account.lines.iter().map(move |line| CsvRow {
                payer_account_id: bill.payer_account_id.clone(),
                month: bill.month,
                status: bill.status,
                account_id: account.account_id.clone(),
                account_name: account.name.clone(),
                billed_to: account.billed_to.clone(),
                service: line.service.clone(),
                action: line.action.clone(),
                unit: line.unit.clone(),
                quantity: line.quantity,
                amount: line.amount,
                original_month: line.original_month,
                prices_from: line.prices_from,
            })
        })
        .collect()
}

/// Parses CSV written by [`to_csv`] (header required).
pub fn parse_csv(text: &str) -> Result<Vec<CsvRow>, CsvError> {
    let records = parse_records(text)?;
    let mut records = records.into_iter();
    let header_ok = records
        .next()
        .is_some_and(|h| h.iter().map(String::as_str).eq(CSV_COLUMNS));
    if !header_ok {
        return Err(CsvError::Header {
            expected: CSV_COLUMNS.join(","),
        });
    }
    records
        .enumerate()
        .map(|(i, fields)| parse_row(i + 1, fields))
        .collect()
}

/// Splits RFC 4180 text into records of fields. Accepts CRLF or LF line ends; a final line
/// end is optional.
pub fn parse_records(text: &str) -> Result<Vec<Vec<String>>, CsvError> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut line = 1;
    let mut chars = text.chars().peekable();
    let mut at_field_start = true;
    while let Some(c) = chars.next() {
        match c {
            '"' if at_field_start => {
                // Quoted field: until a lone quote.
                loop {
                    match chars.next() {
                        None => return Err(CsvError::Unterminated { line }),
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some('"') => break,
                        Some(ch) => {
                            if ch == '\n' {
                                line += 1;
                            }
                            field.push(ch);
                        }
                    }
                }
                match chars.peek() {
                    None | Some(',') | Some('\r') | Some('\n') => {}
                    Some(_) => return Err(CsvError::AfterQuote { line }),
                }
                at_field_start = false;
            }
            ',' => {
                record.push(std::mem::take(&mut field));
                at_field_start = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
                line += 1;
                at_field_start = true;
            }
            other => {
                field.push(other);
                at_field_start = false;
            }
        }
    }
    if !record.is_empty() || !field.is_empty() || !at_field_start {
        record.push(field);
        records.push(record);
    }
    Ok(records)
}

/// An aligned plain-text table: one row per line, a total per account and for the bill.
/// Control characters in names are shown as `?` so a name cannot drive the terminal.
pub fn to_table(bill: &Bill) -> String {
    const HEADER: [&str; 8] = [
        "account", "name", "service", "action", "unit", "quantity", "amount", "adjusts",
    ];
    let mut rows: Vec<[String; 8]> = Vec::new();
    for account in &bill.accounts {
        for line in &account.lines {
            rows.push([
                account.account_id.to_string(),
                printable(&account.name),
                printable(&line.service),
                printable(&line.action),
                printable(&line.unit.to_string()),
                line.quantity.normalize().to_string(),
                line.amount.to_string(),
                line.original_month
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
            ]);
        }
        rows.push([
            account.account_id.to_string(),
            printable(&account.name),
            "total".into(),
            String::new(),
            String::new(),
            String::new(),
            account.total.to_string(),
            String::new(),
        ]);
    }
    let mut widths = HEADER.map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let status = bill.status.as_str();
    let _ = write!(
        out,
        "Bill {} for payer {} ({status}, {CURRENCY})",
        bill.month, bill.payer_account_id
    );
    if let Some(payer) = &bill.billed_to {
        let _ = write!(out, ", billed to {payer}");
    }
    out.push('\n');
    let header = HEADER.map(String::from);
    write_table_row(&mut out, &header, &widths);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(rule.join("  ").trim_end());
    out.push('\n');
    for row in &rows {
        write_table_row(&mut out, row, &widths);
    }
    let mut total_row: [String; 8] = Default::default();
    total_row[0] = "TOTAL".into();
    total_row[6] = bill.total.to_string();
    write_table_row(&mut out, &total_row, &widths);
    out
}

fn write_table_row(out: &mut String, row: &[String; 8], widths: &[usize; 8]) {
    let mut cells = Vec::with_capacity(8);
    for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
        // Quantity and amount are right-aligned so decimal points line up.
        if i == 5 || i == 6 {
            cells.push(format!("{cell:>width$}"));
        } else {
            cells.push(format!("{cell:<width$}"));
        }
    }
    out.push_str(cells.join("  ").trim_end());
    out.push('\n');
}

fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn write_record(out: &mut String, fields: impl IntoIterator<Item = String>) {
    let mut first = true;
    for field in fields {
        if !first {
            out.push(',');
        }
        first = false;
        if field.contains([',', '"', '\r', '\n']) {
            out.push('"');
            out.push_str(&field.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(&field);
        }
    }
    out.push_str("\r\n");
}

fn neutralize_formula(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    }
}

fn parse_row(row: usize, fields: Vec<String>) -> Result<CsvRow, CsvError> {
    let found = fields.len();
    let Ok(
        [
            payer,
            month,
            status,
            account_id,
            account_name,
            billed_to,
            service,
            action,
            unit,
            quantity,
            amount,
            original_month,
            prices_from,
        ],
    ) = <[String; 13]>::try_from(fields)
    else {
        return Err(CsvError::FieldCount {
            row,
            expected: CSV_COLUMNS.len(),
            found,
        });
    };
    let bad = |column: &'static str, value: &str| CsvError::Field {
        row,
        column,
        value: value.chars().take(80).collect(),
    };
    let account = |column, value: &str| AccountId::parse(value).map_err(|_| bad(column, value));
    let month_of = |column, value: &str| BillingMonth::parse(value).map_err(|_| bad(column, value));
    Ok(CsvRow {
        payer_account_id: account("payer_account_id", &payer)?,
        month: month_of("month", &month)?,
        status: BillStatus::parse(&status).ok_or_else(|| bad("status", &status))?,
        account_id: account("account_id", &account_id)?,
        billed_to: account("billed_to", &billed_to)?,
        account_name,
        service,
        action,
        unit: Unit::parse(&unit).ok_or_else(|| bad("unit", &unit))?,
        quantity: Decimal::from_str(&quantity)
            .ok()
            .filter(|_| Money::parse(&quantity).is_ok())
            .ok_or_else(|| bad("quantity", &quantity))?,
        amount: Money::parse(&amount).map_err(|_| bad("amount", &amount))?,
        original_month: if original_month.is_empty() {
            None
        } else {
            Some(month_of("original_month", &original_month)?)
        },
        prices_from: if prices_from.is_empty() {
            None
        } else {
            Some(
                DateTime::parse_from_rfc3339(&prices_from)
                    .map_err(|_| bad("prices_from", &prices_from))?
                    .with_timezone(&Utc),
            )
        },
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::billing::bill::{AccountBill, BillLine};

    fn id(s: &str) -> AccountId {
        AccountId::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn m(s: &str) -> Money {
        Money::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn line(action: &str, unit: Unit, quantity: &str, amount: &str, adj: Option<&str>) -> BillLine {
        BillLine {
            service: "storage".into(),
            action: action.into(),
            unit,
            quantity: Decimal::from_str(quantity).unwrap_or_else(|e| panic!("{e}")),
            amount: m(amount),
            original_month: adj.map(|s| BillingMonth::parse(s).unwrap_or_else(|e| panic!("{e}"))),
            prices_from: None,
        }
    }

    fn sample(name_b: &str) -> Bill {
        let payer = id("100000000000");
        let accounts = vec![
            AccountBill {
                account_id: payer.clone(),
                name: "Payer Inc".into(),
                billed_to: payer.clone(),
                lines: vec![line("storage:GetObject", Unit::GbOut, "0.5", "0.05", None)],
                total: m("0.05"),
            },
            AccountBill {
                account_id: id("200000000000"),
                name: name_b.into(),
                billed_to: payer.clone(),
                lines: vec![
                    line("storage:PutObject", Unit::Requests, "800", "7.33", None),
                    line("plan", Unit::Plan("business".into()), "30", "100.00", None),
                    line(
                        "storage:GetObject",
                        Unit::Requests,
                        "10",
                        "-0.13",
                        Some("2026-03"),
                    ),
                ],
                total: m("107.20"),
            },
        ];
        Bill {
            payer_account_id: payer,
            month: BillingMonth::parse("2026-04").unwrap_or_else(|e| panic!("{e}")),
            status: BillStatus::Final,
            billed_to: None,
            accounts,
            total: m("107.25"),
        }
    }

    #[test]
    fn csv_round_trips_with_quoting() {
        let bill = sample("Team \"B\", Research\nDept");
        let csv = to_csv(&bill);
        assert!(csv.starts_with(
            "payer_account_id,month,status,account_id,account_name,billed_to,service,action,unit,quantity,amount,original_month,prices_from\r\n"
        ));
        assert!(csv.contains("\"Team \"\"B\"\", Research\nDept\""), "{csv}");
        assert!(csv.contains(
            "100000000000,2026-04,FINAL,100000000000,Payer Inc,100000000000,storage,storage:GetObject,GB-out,0.5,0.05,,\r\n"
        ));
        assert!(
            csv.contains(",storage:GetObject,requests,10,-0.13,2026-03,\r\n"),
            "{csv}"
        );
        assert_eq!(csv.matches("\r\n").count(), 5);
        let parsed = parse_csv(&csv).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed, rows(&bill));
        let by_unit: BTreeMap<String, String> = parsed
            .iter()
            .map(|r| (r.unit.to_string(), r.amount.to_string()))
            .collect();
        assert_eq!(
            by_unit.get("plan:business").map(String::as_str),
            Some("100.00")
        );
    }

    #[test]
    fn csv_neutralizes_formulas_in_names() {
        let csv = to_csv(&sample("=HYPERLINK(\"http://x\")"));
        let parsed = parse_csv(&csv).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = parsed.iter().map(|r| r.account_name.as_str()).collect();
        assert!(names.contains(&"'=HYPERLINK(\"http://x\")"), "{names:?}");
    }

    #[test]
    fn parser_reports_bad_input() {
        assert!(matches!(
            parse_records("a,\"b"),
            Err(CsvError::Unterminated { .. })
        ));
        assert!(matches!(
            parse_records("a,\"b\"c"),
            Err(CsvError::AfterQuote { .. })
        ));
        assert_eq!(
            parse_records("a,b\n\"c,\"\"d\",\n"),
            Ok(vec![
                vec!["a".to_string(), "b".to_string()],
                vec!["c,\"d".to_string(), String::new()]
            ])
        );
        assert_eq!(parse_records("x"), Ok(vec![vec!["x".to_string()]]));
        assert!(matches!(parse_csv("a,b\r\n"), Err(CsvError::Header { .. })));
        let csv = to_csv(&sample("B"));
        let short = csv.replacen(",2026-03,\r\n", ",2026-03\r\n", 1);
        assert!(matches!(
            parse_csv(&short),
            Err(CsvError::FieldCount { found: 12, .. })
        ));
        let bad_amount = csv.replacen(",7.33,", ",7.3.3,", 1);
        assert!(matches!(
            parse_csv(&bad_amount),
            Err(CsvError::Field {
                column: "amount",
                ..
            })
        ));
        let bad_unit = csv.replacen(",GB-out,", ",GB,", 1);
        assert!(matches!(
            parse_csv(&bad_unit),
            Err(CsvError::Field { column: "unit", .. })
        ));
    }

    #[test]
    fn table_is_aligned_and_totals_add_up() {
        let table = to_table(&sample("Team B\u{1b}[31m"));
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines.first().copied(),
            Some("Bill 2026-04 for payer 100000000000 (FINAL, USD)")
        );
        assert!(
            !table.contains('\u{1b}'),
            "escape sequences are neutralized"
        );
        // Every amount ends in the same column.
        let ends: Vec<usize> = lines
            .iter()
            .skip(3)
            .filter_map(|l| {
                ["0.05", "7.33", "100.00", "-0.13", "107.20", "107.25"]
                    .iter()
                    .find_map(|a| l.find(&format!(" {a}")).map(|i| i + 1 + a.len()))
            })
            .collect();
        assert_eq!(ends.len(), 7, "{table}");
        assert!(ends.windows(2).all(|w| w.first() == w.last()), "{table}");
        assert!(
            lines
                .last()
                .is_some_and(|l| l.starts_with("TOTAL") && l.ends_with("107.25"))
        );
        assert!(table.contains("2026-03"));
    }
}
