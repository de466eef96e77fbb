//! Schedules: a cron expression read in an IANA time zone, and its next run times.
//!
//! Cron fields are wall-clock times in the group's zone ("0 1 * * *" in
//! Europe/Berlin is 01:00 Berlin time, summer and winter). Across DST changes the
//! rules follow the Open Cron Pattern Specification: a wall-clock time that falls in
//! the hour skipped in spring runs at the first valid instant after the gap (so the
//! nightly job is not lost), and a fixed time in the repeated autumn hour runs once.

use std::str::FromStr;

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::{Cron, JobType};

/// More than any clock change in the tz database (the largest are 2 hours).
const MAX_SHIFT: Duration = Duration::hours(3);

/// A parsed cron expression plus the zone it is read in.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    tz: Tz,
    text: String,
}

impl Schedule {
    /// Parses `expr` (5 fields, or 6 with seconds first) and an IANA zone name.
    /// Errors are written for the operator: what is wrong and what to write instead.
    pub fn new(expr: &str, tz: &str) -> Result<Self, String> {
        let cron = parse_cron(expr)?;
        let tz = parse_timezone(tz)?;
        Ok(Self {
            cron,
            tz,
            text: expr.trim().to_string(),
        })
    }

    pub fn timezone(&self) -> Tz {
        self.tz
    }

    pub fn expression(&self) -> &str {
        &self.text
    }

    /// The first run strictly after `after`, or `None` if the expression never
    /// matches again (e.g. 30 February).
    ///
    /// Croner is only asked for wall-clock matches on a zone-less (UTC) clock; the
    /// mapping to real instants is done here, because croner 3.0.1's own DST handling
    /// moves a 01:00 job to 03:00 on the day the clocks go forward. Rules:
    /// - a wall time in the spring gap runs at the first instant after the gap;
    /// - a wall time in the repeated autumn hour runs at its first occurrence, and
    ///   jobs with a wildcard/interval hour or minute (croner's `IntervalWildcard`)
    ///   run at the second occurrence too, so "every 15 minutes" stays every 15
    ///   real minutes.
    ///
    /// Because the repeated hour maps later wall times to earlier instants, the search
    /// starts [`MAX_SHIFT`] before `after` and keeps the earliest instant found until
    /// wall times are [`MAX_SHIFT`] past it.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let both_passes = self.cron.determine_job_type() == JobType::IntervalWildcard;
        let mut wall = after.with_timezone(&self.tz).naive_local() - MAX_SHIFT;
        let mut best: Option<DateTime<Utc>> = None;
        loop {
            wall = self
                .cron
                .find_next_occurrence(&Utc.from_utc_datetime(&wall), false)
                .ok()?
                .naive_utc();
            if let Some(b) = best
                && wall > b.with_timezone(&self.tz).naive_local() + MAX_SHIFT
            {
                return best;
            }
            let instants: Vec<DateTime<Utc>> = match self.tz.from_local_datetime(&wall) {
                LocalResult::Single(t) => vec![t.with_timezone(&Utc)],
                LocalResult::Ambiguous(first, second) if both_passes => {
                    vec![first.with_timezone(&Utc), second.with_timezone(&Utc)]
                }
                LocalResult::Ambiguous(first, _) => vec![first.with_timezone(&Utc)],
                LocalResult::None => self.after_gap(wall).into_iter().collect(),
            };
            for t in instants.into_iter().filter(|t| *t > after) {
                best = Some(best.map_or(t, |b| b.min(t)));
            }
        }
    }

    /// The first real instant after a wall-clock time that does not exist.
    fn after_gap(&self, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
        (1..=MAX_SHIFT.num_minutes()).find_map(|m| {
            self.tz
                .from_local_datetime(&(wall + Duration::minutes(m)))
                .earliest()
                .map(|t| t.with_timezone(&Utc))
        })
    }

    /// The next `n` runs after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut from = after;
        while out.len() < n {
            match self.next_after(from) {
                Some(t) => {
                    out.push(t);
                    from = t;
                }
                None => break,
            }
        }
        out
    }
}

/// Parses a cron expression, explaining the expected shape on failure.
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    Cron::from_str(expr).map_err(|e| {
        format!(
            "{expr:?} is not a valid cron expression ({e}); write 5 fields \
             \"minute hour day-of-month month day-of-week\", e.g. \"0 1 * * *\" for 01:00 daily"
        )
    })
}

/// Parses an IANA time zone name such as `Europe/Berlin` or `UTC`.
pub fn parse_timezone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| {
        format!(
            "{name:?} is not an IANA time zone; write a name like \"Europe/Berlin\", \
             \"America/New_York\" or \"UTC\" (case matters)"
        )
    })
}
