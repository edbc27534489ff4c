//! The values synthetic studies vary besides their UIDs: Patient ID and
//! Patient's Name (one patient per `--studies-per-patient` studies) and
//! Study Date, so that the retrieval workloads' queries by patient, name
//! and date select a few studies of an archive, as they do in a real one,
//! rather than every study the loadgen ever stored.
//!
//! Each value has a fixed width, like the UIDs ([`crate::uid`]), so it is
//! patched into the head of a prepared data set per study without
//! re-encoding anything.

/// Width of a synthetic Patient ID (LO): `LG`, six digits of the run id,
/// ten digits of the patient number.
pub const PATIENT_ID_WIDTH: usize = 18;

/// Width of a synthetic Patient's Name (PN): `LOADGEN^P` and nine digits.
pub const PATIENT_NAME_WIDTH: usize = 18;

/// Width of a Study Date (DA): `YYYYMMDD`.
pub const STUDY_DATE_WIDTH: usize = 8;

/// Study dates are spread over this many days from 2016-01-01.
const STUDY_DATE_SPAN_DAYS: u64 = 3650;

/// Days from 1970-01-01 to 2016-01-01.
const STUDY_DATE_FIRST_DAY: i64 = 16_801;

// Values of data elements have even lengths: the slots need no padding.
const _: () = assert!(PATIENT_ID_WIDTH % 2 == 0 && PATIENT_NAME_WIDTH % 2 == 0);
const _: () = assert!(STUDY_DATE_WIDTH == 8);

/// The varying values of one synthetic study.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StudyValues {
    /// The run id (in the Patient ID, so two runs never share a patient).
    pub run_id: u64,
    /// The patient's number within the run.
    pub patient: u64,
    /// The study's number within the run.
    pub study: u64,
}

impl StudyValues {
    /// The values of study number `study` of a run, `studies_per_patient`
    /// consecutive studies per patient.
    pub fn new(run_id: u64, study: u64, studies_per_patient: u64) -> StudyValues {
        StudyValues {
            run_id,
            patient: study / studies_per_patient.max(1),
            study,
        }
    }

    /// Writes the Patient ID (`LG`, run id digits, patient digits) into
    /// `slot`, filling it exactly; a slot of another width than
    /// [`PATIENT_ID_WIDTH`] is left as it is (false).
    pub fn write_patient_id(&self, slot: &mut [u8]) -> bool {
        if slot.len() != PATIENT_ID_WIDTH {
            return false;
        }
        let (head, digits) = slot.split_at_mut(2);
        head.copy_from_slice(b"LG");
        let (run, patient) = digits.split_at_mut(6);
        write_digits(run, self.run_id);
        write_digits(patient, self.patient);
        true
    }

    /// Writes the Patient's Name (`LOADGEN^P` and the patient's digits)
    /// into a slot of [`PATIENT_NAME_WIDTH`] (false otherwise, untouched).
    pub fn write_patient_name(&self, slot: &mut [u8]) -> bool {
        if slot.len() != PATIENT_NAME_WIDTH {
            return false;
        }
        let (head, digits) = slot.split_at_mut(9);
        head.copy_from_slice(b"LOADGEN^P");
        write_digits(digits, self.patient);
        true
    }

    /// Writes the Study Date into a slot of [`STUDY_DATE_WIDTH`]: a day of
    /// the ten years from 2016-01-01, spread by a hash of the study number
    /// (the studies of one patient get different dates).
    pub fn write_study_date(&self, slot: &mut [u8]) -> bool {
        if slot.len() != STUDY_DATE_WIDTH {
            return false;
        }
        let spread = self
            .study
            .wrapping_add(self.run_id)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            >> 40;
        let day = STUDY_DATE_FIRST_DAY + (spread % STUDY_DATE_SPAN_DAYS) as i64;
        let (year, month, day) = civil_from_days(day);
        let (year_digits, rest) = slot.split_at_mut(4);
        let (month_digits, day_digits) = rest.split_at_mut(2);
        write_digits(year_digits, year.unsigned_abs());
        write_digits(month_digits, u64::from(month));
        write_digits(day_digits, u64::from(day));
        true
    }

    /// Patient ID, e.g. `LG1234560000000042`.
    pub fn patient_id(&self) -> String {
        text_of(PATIENT_ID_WIDTH, |slot| self.write_patient_id(slot))
    }

    /// Patient's Name, e.g. `LOADGEN^P000000042`.
    pub fn patient_name(&self) -> String {
        text_of(PATIENT_NAME_WIDTH, |slot| self.write_patient_name(slot))
    }

    /// Study Date, `YYYYMMDD`.
    pub fn study_date(&self) -> String {
        text_of(STUDY_DATE_WIDTH, |slot| self.write_study_date(slot))
    }
}

/// The low decimal digits of `value`, zero-padded, filling `out`.
fn write_digits(out: &mut [u8], mut value: u64) {
    for byte in out.iter_mut().rev() {
        *byte = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

fn text_of(width: usize, write: impl FnOnce(&mut [u8]) -> bool) -> String {
    let mut slot = vec![b' '; width];
    let written = write(&mut slot);
    debug_assert!(written, "a slot of the value's own width");
    String::from_utf8_lossy(&slot).into_owned()
}

/// `YYYYMMDD` of a day counted from 1970-01-01 (proleptic Gregorian).
pub fn format_date(days_since_epoch: i64) -> String {
    let (year, month, day) = civil_from_days(days_since_epoch);
    format!("{year:04}{month:02}{day:02}")
}

/// The day number (from 1970-01-01) of a `YYYYMMDD` date, if it is one.
pub fn parse_date(text: &str) -> Option<i64> {
    let text = text.trim();
    if text.len() != 8 || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let year: i64 = text.get(0..4)?.parse().ok()?;
    let month: u32 = text.get(4..6)?.parse().ok()?;
    let day: u32 = text.get(6..8)?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    // Refuse dates that do not exist (31 April): they do not round-trip.
    (civil_from_days(days) == (year, month, day)).then_some(days)
}

/// Howard Hinnant's `days_from_civil`: days since 1970-01-01.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Howard Hinnant's `civil_from_days`: (year, month, day) of a day number.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_have_their_fixed_widths() {
        for (run_id, study) in [(0, 0), (u64::MAX, u64::MAX), (123_456_789, 42)] {
            let values = StudyValues::new(run_id, study, 3);
            assert_eq!(values.patient_id().len(), PATIENT_ID_WIDTH);
            assert_eq!(values.patient_name().len(), PATIENT_NAME_WIDTH);
            assert_eq!(values.study_date().len(), STUDY_DATE_WIDTH);
            assert!(parse_date(&values.study_date()).is_some());
        }
    }

    #[test]
    fn studies_of_one_patient_share_id_and_name_not_date() {
        let first = StudyValues::new(7, 6, 3);
        let second = StudyValues::new(7, 8, 3);
        let other = StudyValues::new(7, 9, 3);
        assert_eq!(first.patient_id(), second.patient_id());
        assert_eq!(first.patient_name(), second.patient_name());
        assert_ne!(first.patient_id(), other.patient_id());
        let dates: std::collections::BTreeSet<String> = (0..50)
            .map(|study| StudyValues::new(7, study, 50).study_date())
            .collect();
        assert!(dates.len() > 40, "{dates:?}");
    }

    #[test]
    fn dates_round_trip_and_calendar_is_right() {
        assert_eq!(format_date(0), "19700101");
        assert_eq!(format_date(STUDY_DATE_FIRST_DAY), "20160101");
        assert_eq!(parse_date("20000229"), Some(11_016));
        assert_eq!(format_date(11_016), "20000229");
        assert_eq!(parse_date("20010229"), None);
        assert_eq!(parse_date("2001022"), None);
        assert_eq!(parse_date("2001-02-2"), None);
        for day in (-700_000..800_000).step_by(997) {
            assert_eq!(parse_date(&format_date(day)), Some(day), "{day}");
        }
    }
}
