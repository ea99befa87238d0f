//! People and their managers, imported from a CSV file (`vakt people import FILE.csv`).
//!
//! The header names the columns, in any order and any letter case:
//!
//! | column          | required | meaning                                                        |
//! |-----------------|----------|----------------------------------------------------------------|
//! | `email`         | yes      | the person's address; devices are assigned by it               |
//! | `name`          | yes      | full name, as the manager's mail shows it                      |
//! | `manager_email` | no       | the closest manager, who is told about violations (8.5)        |
//! | `end_date`      | no       | last day of employment or assignment (8.6)                     |
//! | `leave_from`    | no       | first day of a leave of absence                                |
//! | `leave_to`      | no       | last day of that leave; empty: open-ended                      |
//!
//! Dates are ISO 8601 calendar dates (`2025-06-30`); an empty cell means none. The file is
//! RFC 4180 CSV: fields may be quoted, `""` is a quote inside a quoted field, quoted fields may
//! span lines, and lines may end in CRLF. A UTF-8 byte-order mark is skipped. Spreadsheets set
//! to Swedish write `;` between fields (the comma is the decimal sign there): a header with a
//! `;` and no `,` makes `;` the separator. The file must be UTF-8 ("CSV UTF-8" in Excel);
//! anything else is refused rather than guessed, so names like "Åsa Öberg" arrive intact.
//!
//! The whole file is validated before anything is used: [`parse`] returns every person or every
//! error, each naming the row (as a spreadsheet numbers it: the header is row 1) and the column
//! (letter and header name).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use time::Date;

time::serde::format_description!(pub iso_date, Date, "[year]-[month]-[day]");

/// One person in the register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    /// Lower-case.
    pub email: String,
    pub name: String,
    /// Lower-case; `None` for someone with no manager on record.
    #[serde(default)]
    pub manager_email: Option<String>,
    #[serde(default, with = "iso_date::option")]
    pub end_date: Option<Date>,
    #[serde(default, with = "iso_date::option")]
    pub leave_from: Option<Date>,
    #[serde(default, with = "iso_date::option")]
    pub leave_to: Option<Date>,
}

/// One problem in a people CSV file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct CsvError {
    /// Row as a spreadsheet shows it: the header is row 1.
    pub row: usize,
    /// 1-based column, when the problem is in one cell.
    pub column: Option<usize>,
    /// The column's header name, when known.
    pub header: Option<String>,
    pub message: String,
}

impl fmt::Display for CsvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "row {}", self.row)?;
        if let Some(c) = self.column {
            write!(f, ", column {}", column_letter(c))?;
            if let Some(h) = &self.header {
                write!(f, " ({h})")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

/// A spreadsheet's name for a 1-based column: A … Z, AA, AB, …
fn column_letter(mut n: usize) -> String {
    let mut s = Vec::new();
    while n > 0 {
        let r = (n - 1) % 26;
        s.push(b'A' + r as u8);
        n = (n - 1) / 26;
    }
    s.reverse();
    String::from_utf8_lossy(&s).into_owned()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Col {
    Email,
    Name,
    Manager,
    EndDate,
    LeaveFrom,
    LeaveTo,
}

const COLUMNS: [(&str, Col); 6] = [
    ("email", Col::Email),
    ("name", Col::Name),
    ("manager_email", Col::Manager),
    ("end_date", Col::EndDate),
    ("leave_from", Col::LeaveFrom),
    ("leave_to", Col::LeaveTo),
];

/// A record as read: its row number and each field with its 1-based column.
struct Record {
    row: usize,
    fields: Vec<String>,
}

/// Parse a people file. Returns every person, or every error found; never a mix.
pub fn parse(bytes: &[u8]) -> Result<Vec<Person>, Vec<CsvError>> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let row = bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1;
            return Err(vec![CsvError {
                row,
                column: None,
                header: None,
                message: "the file is not UTF-8; save it as \"CSV UTF-8\"".into(),
            }]);
        }
    };
    let first_line = text.lines().next().unwrap_or("");
    let sep = if first_line.contains(';') && !first_line.contains(',') {
        ';'
    } else {
        ','
    };
    let mut errors = Vec::new();
    let records = read_records(text, sep, &mut errors);
    let mut records = records.into_iter();
    let Some(header) = records.next() else {
        errors.push(CsvError {
            row: 1,
            column: None,
            header: None,
            message: "the file is empty; the first row must name the columns".into(),
        });
        return Err(errors);
    };
    let columns = read_header(&header, &mut errors);
    let mut people = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for record in records {
        if let Some(columns) = &columns
            && let Some(person) = read_person(&record, columns, &header, &mut seen, &mut errors)
        {
            people.push(person);
        }
    }
    if columns.is_some() && people.is_empty() && errors.is_empty() {
        errors.push(CsvError {
            row: 2,
            column: None,
            header: None,
            message: "the file has a header but no people".into(),
        });
    }
    if errors.is_empty() {
        Ok(people)
    } else {
        // Errors found while splitting records knew the column but not yet its name.
        for e in &mut errors {
            if e.header.is_none()
                && let Some(name) = e.column.and_then(|c| header.fields.get(c - 1))
            {
                e.header = Some(name.trim().to_lowercase());
            }
        }
        errors.sort_by_key(|e| (e.row, e.column));
        Err(errors)
    }
}

/// Split the text into records (RFC 4180), skipping blank lines. Quoting errors are reported
/// and the record is still returned as far as it could be read, so later rows are checked too.
fn read_records(text: &str, sep: char, errors: &mut Vec<CsvError>) -> Vec<Record> {
    let mut records = Vec::new();
    let mut chars = text.chars().peekable();
    let mut row = 0;
    while chars.peek().is_some() {
        row += 1;
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut quoted_field = false;
        loop {
            let Some(c) = chars.next() else {
                fields.push(std::mem::take(&mut field));
                break;
            };
            match c {
                // Spaces before the opening quote (`a, "b"`) are a common hand-written form.
                '"' if field.trim().is_empty() && !quoted_field => {
                    quoted_field = true;
                    field.clear();
                    let col = fields.len() + 1;
                    loop {
                        match chars.next() {
                            Some('"') if chars.peek() == Some(&'"') => {
                                chars.next();
                                field.push('"');
                            }
                            Some('"') => break,
                            Some(c) => field.push(c),
                            None => {
                                errors.push(CsvError {
                                    row,
                                    column: Some(col),
                                    header: None,
                                    message: "a quoted field is never closed with `\"`".into(),
                                });
                                break;
                            }
                        }
                    }
                    // After the closing quote only a separator or the line end may follow.
                    if let Some(&next) = chars.peek()
                        && next != sep
                        && next != '\r'
                        && next != '\n'
                    {
                        errors.push(CsvError {
                            row,
                            column: Some(col),
                            header: None,
                            message: format!(
                                "text after the closing quote; quote the whole field and \
                                 write a quote inside it as \"\" (found `{next}`)"
                            ),
                        });
                        while chars.peek().is_some_and(|&c| c != sep && c != '\n') {
                            chars.next();
                        }
                    }
                }
                '"' => {
                    errors.push(CsvError {
                        row,
                        column: Some(fields.len() + 1),
                        header: None,
                        message: "a quote inside an unquoted field; quote the whole field and \
                                  write the quote as \"\""
                            .into(),
                    });
                    field.push('"');
                }
                c if c == sep => {
                    fields.push(std::mem::take(&mut field));
                    quoted_field = false;
                }
                '\r' if chars.peek() == Some(&'\n') => {}
                '\n' => {
                    fields.push(std::mem::take(&mut field));
                    break;
                }
                c => field.push(c),
            }
        }
        let blank = fields.len() == 1 && fields[0].trim().is_empty() && !quoted_field;
        if !blank {
            records.push(Record { row, fields });
        }
        // Rows count records, as a spreadsheet does; a quoted field spanning lines is one row.
    }
    records
}

/// Map header names to columns; every unknown, duplicate or missing column is an error.
fn read_header(header: &Record, errors: &mut Vec<CsvError>) -> Option<Vec<Option<Col>>> {
    let before = errors.len();
    let mut cols = Vec::with_capacity(header.fields.len());
    let mut seen: BTreeMap<Col, usize> = BTreeMap::new();
    for (i, name) in header.fields.iter().enumerate() {
        let key = name.trim().to_lowercase();
        match COLUMNS.iter().find(|(n, _)| *n == key) {
            Some((_, col)) => {
                if let Some(first) = seen.insert(*col, i + 1) {
                    errors.push(CsvError {
                        row: header.row,
                        column: Some(i + 1),
                        header: Some(key.clone()),
                        message: format!(
                            "column `{key}` appears twice (first in column {})",
                            column_letter(first)
                        ),
                    });
                }
                cols.push(Some(*col));
            }
            None if key.is_empty() && header.fields.len() == i + 1 && i > 0 => {
                // A trailing separator after the last header, as some exports write.
                cols.push(None);
            }
            None => {
                errors.push(CsvError {
                    row: header.row,
                    column: Some(i + 1),
                    header: Some(name.trim().to_string()),
                    message: format!(
                        "unknown column `{}` (expected: {})",
                        name.trim(),
                        COLUMNS.map(|(n, _)| n).join(", ")
                    ),
                });
                cols.push(None);
            }
        }
    }
    for (name, col) in [("email", Col::Email), ("name", Col::Name)] {
        if !seen.contains_key(&col) {
            errors.push(CsvError {
                row: header.row,
                column: None,
                header: None,
                message: format!("the header has no `{name}` column, which is required"),
            });
        }
    }
    (errors.len() == before).then_some(cols)
}

fn read_person(
    record: &Record,
    columns: &[Option<Col>],
    header: &Record,
    seen: &mut BTreeMap<String, usize>,
    errors: &mut Vec<CsvError>,
) -> Option<Person> {
    let before = errors.len();
    let err = |col: Option<usize>, message: String| CsvError {
        row: record.row,
        column: col,
        header: col
            .and_then(|c| header.fields.get(c - 1))
            .map(|h| h.trim().to_lowercase()),
        message,
    };
    if record.fields.len() != columns.len() {
        errors.push(err(
            None,
            format!(
                "{} fields where the header has {}",
                record.fields.len(),
                columns.len()
            ),
        ));
        return None;
    }
    let mut cell: BTreeMap<Col, (usize, &str)> = BTreeMap::new();
    for (i, (col, value)) in columns.iter().zip(&record.fields).enumerate() {
        if let Some(col) = col {
            cell.insert(*col, (i + 1, value.trim()));
        }
    }
    let get = |col: Col| cell.get(&col).copied().filter(|(_, v)| !v.is_empty());

    let email = match cell.get(&Col::Email).copied() {
        Some((c, "")) => {
            errors.push(err(Some(c), "the e-mail address is empty".into()));
            None
        }
        Some((c, v)) => match check_email(v) {
            Ok(e) => {
                if let Some(first) = seen.insert(e.clone(), record.row) {
                    errors.push(err(
                        Some(c),
                        format!("{e} is already on row {first}; each person once"),
                    ));
                }
                Some(e)
            }
            Err(m) => {
                errors.push(err(Some(c), m));
                None
            }
        },
        None => None,
    };
    let name = match cell.get(&Col::Name).copied() {
        Some((c, "")) => {
            errors.push(err(Some(c), "the name is empty".into()));
            None
        }
        Some((_, v)) => Some(v.to_string()),
        None => None,
    };
    let manager_email = match get(Col::Manager) {
        Some((c, v)) => match check_email(v) {
            Ok(m) if Some(&m) == email.as_ref() => {
                errors.push(err(
                    Some(c),
                    "a person cannot be their own manager; leave the cell empty if there is none"
                        .into(),
                ));
                None
            }
            Ok(m) => Some(m),
            Err(m) => {
                errors.push(err(Some(c), m));
                None
            }
        },
        None => None,
    };
    let mut date = |col: Col| -> Option<Date> {
        let (c, v) = get(col)?;
        match Date::parse(v, &iso_format()) {
            Ok(d) => Some(d),
            Err(_) => {
                errors.push(err(
                    Some(c),
                    format!("`{v}` is not a date; write it as YYYY-MM-DD, e.g. 2025-06-30"),
                ));
                None
            }
        }
    };
    let end_date = date(Col::EndDate);
    let leave_from = date(Col::LeaveFrom);
    let leave_to = date(Col::LeaveTo);
    if let Some((c, _)) = get(Col::LeaveTo) {
        match (leave_from, leave_to) {
            (None, _) if get(Col::LeaveFrom).is_none() => errors.push(err(
                Some(c),
                "a leave end without a leave start (`leave_from`)".into(),
            )),
            (Some(from), Some(to)) if to < from => errors.push(err(
                Some(c),
                format!("the leave ends ({to}) before it starts ({from})"),
            )),
            _ => {}
        }
    }
    if errors.len() != before {
        return None;
    }
    Some(Person {
        email: email?,
        name: name?,
        manager_email,
        end_date,
        leave_from,
        leave_to,
    })
}

fn iso_format() -> &'static [time::format_description::BorrowedFormatItem<'static>] {
    time::macros::format_description!("[year]-[month]-[day]")
}

/// A plausible mail address, lower-cased: one `@`, something on both sides, a dot in the
/// domain, no spaces. (Deliverability is the mail server's business, not the register's.)
fn check_email(v: &str) -> Result<String, String> {
    let ok = match v.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !v
                    .chars()
                    .any(|c| c.is_whitespace() || c == '<' || c == '>' || c == ',')
        }
        None => false,
    };
    if ok {
        Ok(v.to_lowercase())
    } else {
        Err(format!("`{v}` is not an e-mail address"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn errs(text: &str) -> Vec<String> {
        parse(text.as_bytes())
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn reads_a_well_formed_file() {
        let text = "\u{feff}email,name,manager_email,end_date,leave_from,leave_to\r\n\
                    anna.berg@sorsele.se,Anna Berg,chef@sorsele.se,,,\r\n\
                    \"ASA.OBERG@Sorsele.se\",\"Öberg, Åsa \"\"Åsa\"\"\",,2025-06-30,2024-01-01,2025-12-31\r\n\
                    \r\n";
        let people = parse(text.as_bytes()).unwrap();
        assert_eq!(people.len(), 2);
        assert_eq!(people[0].manager_email.as_deref(), Some("chef@sorsele.se"));
        assert_eq!(people[0].end_date, None);
        let asa = &people[1];
        assert_eq!(asa.email, "asa.oberg@sorsele.se");
        assert_eq!(asa.name, "Öberg, Åsa \"Åsa\"");
        assert_eq!(asa.end_date, Some(date!(2025 - 06 - 30)));
        assert_eq!(asa.leave_from, Some(date!(2024 - 01 - 01)));
        assert_eq!(asa.leave_to, Some(date!(2025 - 12 - 31)));
    }

    #[test]
    fn columns_in_any_order_optional_ones_absent_and_semicolons() {
        let text = "Name;EMAIL\nPer Ågren;per@sorsele.se\n";
        let people = parse(text.as_bytes()).unwrap();
        assert_eq!(people[0].name, "Per Ågren");
        assert_eq!(people[0].email, "per@sorsele.se");
        assert_eq!(people[0].manager_email, None);
    }

    #[test]
    fn quoted_fields_may_span_lines_and_rows_count_records() {
        let text = "email,name\na@sorsele.se,\"Anna\nBerg\"\nb@sorsele.se,\n";
        assert_eq!(errs(text), ["row 3, column B (name): the name is empty"]);
    }

    #[test]
    fn every_error_names_row_and_column_and_nothing_is_returned() {
        let text = "email,name,manager_email,end_date,leave_from,leave_to\n\
                    anna@sorsele.se,Anna,chef@sorsele.se,2025-13-01,,\n\
                    not-an-address,Bo,,,,\n\
                    anna@sorsele.se,Anna igen,,,,\n\
                    cia@sorsele.se,Cia,cia@sorsele.se,,2025-05-01,2025-04-01\n\
                    dan@sorsele.se,Dan,,,,2025-04-01\n\
                    eva@sorsele.se,Eva\n\
                    ok@sorsele.se,Ok,,,,\n";
        assert_eq!(
            errs(text),
            [
                "row 2, column D (end_date): `2025-13-01` is not a date; write it as YYYY-MM-DD, e.g. 2025-06-30",
                "row 3, column A (email): `not-an-address` is not an e-mail address",
                "row 4, column A (email): anna@sorsele.se is already on row 2; each person once",
                "row 5, column C (manager_email): a person cannot be their own manager; leave the cell empty if there is none",
                "row 5, column F (leave_to): the leave ends (2025-04-01) before it starts (2025-05-01)",
                "row 6, column F (leave_to): a leave end without a leave start (`leave_from`)",
                "row 7: 2 fields where the header has 6",
            ]
        );
    }

    #[test]
    fn header_errors() {
        assert_eq!(
            errs("email,namn,email\n"),
            [
                "row 1: the header has no `name` column, which is required",
                "row 1, column B (namn): unknown column `namn` (expected: email, name, manager_email, end_date, leave_from, leave_to)",
                "row 1, column C (email): column `email` appears twice (first in column A)",
            ]
        );
        assert_eq!(
            errs(""),
            ["row 1: the file is empty; the first row must name the columns"]
        );
        assert_eq!(
            errs("email,name\n"),
            ["row 2: the file has a header but no people"]
        );
    }

    #[test]
    fn quoting_errors() {
        assert_eq!(
            errs("email,name\na@sorsele.se,An\"na\n"),
            [
                "row 2, column B (name): a quote inside an unquoted field; quote the whole field and write the quote as \"\""
            ]
        );
        assert_eq!(
            errs("email,name\na@sorsele.se,\"Anna\"x\n"),
            [
                "row 2, column B (name): text after the closing quote; quote the whole field and write a quote inside it as \"\" (found `x`)"
            ]
        );
        assert_eq!(
            errs("email,name\na@sorsele.se,\"Anna\n"),
            ["row 2, column B (name): a quoted field is never closed with `\"`"]
        );
    }

    #[test]
    fn other_encodings_are_refused_not_guessed() {
        // "Åsa" in Windows-1252.
        let bytes = b"email,name\nasa@sorsele.se,\xC5sa\n";
        let e = parse(bytes).unwrap_err();
        assert_eq!(e[0].row, 2);
        assert!(e[0].message.contains("UTF-8"));
    }

    #[test]
    fn column_letters() {
        assert_eq!(column_letter(1), "A");
        assert_eq!(column_letter(26), "Z");
        assert_eq!(column_letter(27), "AA");
        assert_eq!(column_letter(53), "BA");
    }

    #[test]
    fn people_serialize_dates_as_iso() {
        let p = parse(b"email,name,end_date\na@sorsele.se,A,2025-06-30\n").unwrap();
        let json = serde_json::to_value(&p[0]).unwrap();
        assert_eq!(json["end_date"], "2025-06-30");
        assert_eq!(json["leave_from"], serde_json::Value::Null);
        let back: Person = serde_json::from_value(json).unwrap();
        assert_eq!(back, p[0]);
    }
}
