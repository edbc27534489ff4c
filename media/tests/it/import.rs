//! Reading File-sets written by others: DCMTK's dcmmkdir and dcmgpdir and
//! pydicom's FileSet, with patient names in ISO_IR 100, ISO_IR 192 and
//! ISO 2022 IR 87; every referenced file found where its File ID says.

use std::collections::BTreeSet;
use std::path::Path;

use sluice_media::{read_dicomdir, Directory};

use crate::support::{pydicom, run, Scratch};

const NAMES: [&str; 3] = [
    "Buc^J\u{e9}r\u{f4}me",
    "Wang^XiaoDong=\u{738b}^\u{5c0f}\u{6771}",
    "Yamada^Tarou=\u{5c71}\u{7530}^\u{592a}\u{90ce}",
];

fn check(directory: &Directory, root: &Path) {
    assert!(directory.issues.is_empty(), "{:#?}", directory.issues);
    let names: BTreeSet<&str> = directory
        .patients
        .iter()
        .map(|patient| patient.patient_name.as_str())
        .collect();
    assert_eq!(names, NAMES.into_iter().collect());
    assert_eq!(directory.instances.len(), 3);
    for instance in &directory.instances {
        let mut path = root.to_path_buf();
        for component in instance.file_id.components() {
            path.push(component);
        }
        assert!(path.is_file(), "{path:?}");
        assert_eq!(instance.record_type, "IMAGE");
        assert_eq!(instance.sop_class_uid, "1.2.840.10008.5.1.4.1.1.2");
        let patient = directory.patient_of(instance).unwrap();
        let study = directory.study_of(instance).unwrap();
        assert!(patient.patient_id.starts_with("PAT"));
        assert_eq!(study.study_date, "20240102");
        assert!(study.study_description.starts_with("Study "));
    }
}

#[test]
fn dcmtk_file_sets_are_read_with_their_character_sets() {
    for tool in ["/usr/bin/dcmmkdir", "/usr/bin/dcmgpdir"] {
        let scratch = Scratch::new("dcmtk");
        let root = scratch.path();
        pydicom(&["make", root.to_str().unwrap()]);
        let (ok, stdout, stderr) = run(tool, &["+r", "+id", "."], Some(root));
        assert!(ok, "{tool}: {stdout}{stderr}");
        let directory = read_dicomdir(&std::fs::read(root.join("DICOMDIR")).unwrap()).unwrap();
        check(&directory, root);
    }
}

#[test]
fn pydicom_file_sets_are_read_with_their_character_sets() {
    let scratch = Scratch::new("pydicom-in");
    let input = scratch.path().join("in");
    let output = scratch.path().join("out");
    pydicom(&["make", input.to_str().unwrap()]);
    let files: Vec<String> = (1..=3)
        .map(|number| {
            input
                .join(format!("IM{number}"))
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let mut args = vec!["write", output.to_str().unwrap()];
    args.extend(files.iter().map(String::as_str));
    pydicom(&args);
    let directory = read_dicomdir(&std::fs::read(output.join("DICOMDIR")).unwrap()).unwrap();
    check(&directory, &output);
}
