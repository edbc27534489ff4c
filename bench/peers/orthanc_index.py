"""Orthanc's SQLite index written directly, as `qr_load index` writes
Sluice's: the same archive (`qr_load attributes`, one definition for both)
in Orthanc 1.10's schema (database version 6), for the C-FIND sizes
C-STORE cannot load into Orthanc within a session (1 M instances).

What it copies from Orthanc itself rather than assuming (`write`):
- the empty index (schema, triggers, GlobalProperties): an Orthanc started
  on the empty directory makes it;
- what one instance makes: the rows an Orthanc wrote for the archive's
  instance 0 stored by C-STORE (the template directory): which tags land in
  MainDicomTags and DicomIdentifiers at each level, the metadata of each
  level, the attachment's compression, the change types; the instance's
  stored file becomes every instance's file (hard links, one copy per
  50,000, under ext4's link limit), as Sluice's are.
What it computes as Orthanc does (checked by `compare_databases` against an
Orthanc loaded by C-STORE, qr.py `--check-orthanc-index`):
- public ids: SHA-1 of `PatientID`, `PatientID|StudyUID`,
  `PatientID|StudyUID|SeriesUID`, `...|SOPInstanceUID`, hex in five dashed
  groups of eight (Orthanc's DicomInstanceHasher, Toolbox::ComputeSHA1);
- DicomIdentifiers: the value in capitals, spaces stripped, `%` and `_` as
  spaces (ServerToolbox::NormalizeIdentifier);
- resources created as one C-STORE creates them: the instance, then its
  series, study and patient when new (internal ids in that order), one
  change each; PatientRecyclingOrder and the size totals (GlobalIntegers)
  by Orthanc's own triggers; IndexInSeries the Instance Number (what an
  Orthanc given the files in name order holds);
- the attachment's size: the Part 10 length `qr_load files` writes less
  what Orthanc's rewritten meta header saves on the template (constant:
  Orthanc keeps the data set as received); the pixel data offset moves by
  as much. The MD5 is the template's (the file on disk is the template).
"""
import hashlib
import itertools
import os
import sqlite3
import subprocess
import time
import uuid

# Resource types and the attribute column (qr_load attributes) of each tag.
PATIENT, STUDY, SERIES, INSTANCE = 1, 2, 3, 4
TAG_COLUMNS = {
    (0x0010, 0x0010): "PatientName", (0x0010, 0x0020): "PatientID",
    (0x0010, 0x0030): "PatientBirthDate", (0x0010, 0x0040): "PatientSex",
    (0x0020, 0x000D): "StudyInstanceUID", (0x0008, 0x0020): "StudyDate",
    (0x0008, 0x0030): "StudyTime", (0x0008, 0x0050): "AccessionNumber",
    (0x0020, 0x0010): "StudyID", (0x0008, 0x1030): "StudyDescription",
    (0x0008, 0x0090): "ReferringPhysicianName", (0x0020, 0x000E): "SeriesInstanceUID",
    (0x0008, 0x0060): "Modality", (0x0020, 0x0011): "SeriesNumber",
    (0x0008, 0x103E): "SeriesDescription", (0x0008, 0x0018): "SOPInstanceUID",
    (0x0020, 0x0013): "InstanceNumber",
}
# Metadata types (Orthanc's MetadataType) computed per instance; the others
# are copied from the template's rows.
INDEX_IN_SERIES, PIXEL_DATA_OFFSET = 1, 14
FILE_TYPE_DICOM = 1
LINKS_PER_SOURCE = 50_000
BATCH = 20_000


def sha1_id(text):
    """Orthanc's public id: SHA-1 in hex, five dashed groups of eight."""
    digest = hashlib.sha1(text.encode()).hexdigest()
    return "-".join(digest[i:i + 8] for i in range(0, 40, 8))


def public_ids(row):
    """Patient, study, series and instance ids of one attributes row."""
    keys = [row["PatientID"], row["StudyInstanceUID"], row["SeriesInstanceUID"],
            row["SOPInstanceUID"]]
    return [sha1_id("|".join(keys[:depth])) for depth in range(1, 5)]


def normalize(value):
    """ServerToolbox::NormalizeIdentifier."""
    kept = "".join(" " if c in "%_" else c for c in value
                   if c in "%_" or (c.isascii() and c.isprintable()))
    return kept.upper().strip()


def attribute_rows(qr_load, instances, pixel_bytes):
    """The archive's instances as dicts, from `qr_load attributes`."""
    process = subprocess.Popen([qr_load, "attributes", str(instances), str(pixel_bytes)],
                               stdout=subprocess.PIPE, text=True, bufsize=1 << 20)
    columns = process.stdout.readline().rstrip("\n").split("\t")
    for line in process.stdout:
        yield dict(zip(columns, line.rstrip("\n").split("\t")))
    if process.wait() != 0:
        raise RuntimeError(f"qr_load attributes failed ({process.returncode})")


class Template:
    """What an Orthanc wrote for one instance stored by C-STORE."""

    def __init__(self, template_dir, first_row):
        db = sqlite3.connect(f"file:{os.path.join(template_dir, 'index')}?mode=ro", uri=True)
        resources = db.execute("SELECT internalId, resourceType FROM Resources").fetchall()
        if sorted(kind for _, kind in resources) != [PATIENT, STUDY, SERIES, INSTANCE]:
            raise RuntimeError(f"template index holds {resources}, not one instance")
        by_type = {kind: internal for internal, kind in resources}
        self.main_tags, self.identifiers, self.metadata = {}, {}, {}
        for kind, internal in by_type.items():
            for table, target in [("MainDicomTags", self.main_tags),
                                  ("DicomIdentifiers", self.identifiers)]:
                tags = db.execute(f"SELECT tagGroup, tagElement, value FROM {table} "
                                  "WHERE id = ? ORDER BY rowid", (internal,)).fetchall()
                for group, element, value in tags:
                    column = TAG_COLUMNS.get((group, element))
                    if column is None:
                        raise RuntimeError(f"Orthanc keeps ({group:04X},{element:04X}) in "
                                           f"{table}: not among qr_load's attributes")
                    expected = first_row[column] if table == "MainDicomTags" \
                        else normalize(first_row[column])
                    if value != expected:
                        raise RuntimeError(f"{table} ({group:04X},{element:04X}) is {value!r} "
                                           f"in Orthanc, {expected!r} computed")
                target[kind] = [(group, element) for group, element, _ in tags]
            self.metadata[kind] = db.execute(
                "SELECT type, value FROM Metadata WHERE id = ? ORDER BY rowid",
                (internal,)).fetchall()
        ids = public_ids(first_row)
        for kind, internal in by_type.items():
            (public,) = db.execute("SELECT publicId FROM Resources WHERE internalId = ?",
                                   (internal,)).fetchone()
            if public != ids[kind - 1]:
                raise RuntimeError(f"Orthanc's id {public}, {ids[kind - 1]} computed")
        # The New* change of each level (the Stable* ones come later).
        self.changes = dict(db.execute(
            "SELECT resourceType, MIN(changeType) FROM Changes GROUP BY resourceType"))
        self.change_date = db.execute("SELECT date FROM Changes LIMIT 1").fetchone()[0]
        files = db.execute("SELECT fileType, uuid, compressedSize, uncompressedSize, "
                           "compressionType, uncompressedMD5, compressedMD5 FROM AttachedFiles "
                           "WHERE id = ?", (by_type[INSTANCE],)).fetchall()
        db.close()
        if len(files) != 1 or files[0][0] != FILE_TYPE_DICOM or files[0][2] != files[0][3]:
            raise RuntimeError(f"template attachments {files}: one uncompressed DICOM file "
                               "expected (StorageCompression off)")
        _, file_uuid, self.size, _, self.compression, self.md5, _ = files[0]
        self.file = os.path.join(template_dir, file_uuid[0:2], file_uuid[2:4], file_uuid)
        if os.path.getsize(self.file) != self.size:
            raise RuntimeError(f"{self.file}: not {self.size} bytes")
        # Orthanc keeps the data set as received and writes its own meta
        # header: the stored file is shorter than qr_load's by a constant.
        self.size_delta = int(first_row["Part10Bytes"]) - self.size
        self.pixel_offset = int(dict(self.metadata[INSTANCE]).get(PIXEL_DATA_OFFSET, -1))


def write(data_dir, template_dir, qr_load, instances, pixel_bytes, links_dir):
    """Fills the empty Orthanc index of `data_dir` with the archive's
    `instances` and gives each a stored file (a hard link under `links_dir`'s
    copies of the template). Returns the load's figures."""
    started = time.time()
    rows = attribute_rows(qr_load, instances, pixel_bytes)
    first = next(rows)
    template = Template(template_dir, first)
    db = sqlite3.connect(os.path.join(data_dir, "index"), isolation_level=None)
    (count,) = db.execute("SELECT COUNT(*) FROM Resources").fetchone()
    if count:
        raise RuntimeError(f"{data_dir}/index is not empty ({count} resources)")
    db.execute("PRAGMA journal_mode = OFF")
    db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA cache_size = -1000000")
    os.makedirs(links_dir, exist_ok=True)
    known = {PATIENT: {}, STUDY: {}, SERIES: {}}
    next_id = 1
    made_dirs = set()
    tables = {name: [] for name in ["Resources", "MainDicomTags", "DicomIdentifiers",
                                    "Metadata", "AttachedFiles", "Changes"]}
    sql = {"Resources": "INSERT INTO Resources VALUES (?, ?, ?, ?)",
           "MainDicomTags": "INSERT INTO MainDicomTags VALUES (?, ?, ?, ?)",
           "DicomIdentifiers": "INSERT INTO DicomIdentifiers VALUES (?, ?, ?, ?)",
           "Metadata": "INSERT INTO Metadata VALUES (?, ?, ?)",
           "AttachedFiles": "INSERT INTO AttachedFiles VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
           "Changes": "INSERT INTO Changes (changeType, internalId, resourceType, date) "
                      "VALUES (?, ?, ?, ?)"}

    def flush():
        db.execute("BEGIN")
        for name, values in tables.items():
            db.executemany(sql[name], values)
            values.clear()
        db.execute("COMMIT")

    def link_source(number):
        copy = number // LINKS_PER_SOURCE
        source = os.path.join(links_dir, f"template.dcm.{copy}")
        if not os.path.exists(source):
            with open(template.file, "rb") as src, open(source, "wb") as dst:
                dst.write(src.read())
        return source

    def add(kind, internal, public, parent, row):
        tables["Resources"].append((internal, kind, public, parent))
        for group, element in template.main_tags[kind]:
            tables["MainDicomTags"].append(
                (internal, group, element, row[TAG_COLUMNS[(group, element)]]))
        for group, element in template.identifiers[kind]:
            tables["DicomIdentifiers"].append(
                (internal, group, element, normalize(row[TAG_COLUMNS[(group, element)]])))
        tables["Changes"].append((template.changes[kind], internal, kind, template.change_date))

    written = 0
    for row in itertools.chain([first], rows):
        ids = public_ids(row)
        # Orthanc creates the instance, then each new ancestor, upwards.
        instance_id = next_id
        next_id += 1
        chain = []
        for kind in (SERIES, STUDY, PATIENT):
            if ids[kind - 1] in known[kind]:
                break
            known[kind][ids[kind - 1]] = next_id
            chain.append((kind, next_id))
            next_id += 1
        parents = {INSTANCE: known[SERIES][ids[SERIES - 1]],
                   SERIES: known[STUDY][ids[STUDY - 1]],
                   STUDY: known[PATIENT][ids[PATIENT - 1]], PATIENT: None}
        add(INSTANCE, instance_id, ids[INSTANCE - 1], parents[INSTANCE], row)
        size = int(row["Part10Bytes"]) - template.size_delta
        for meta_type, value in template.metadata[INSTANCE]:
            if meta_type == INDEX_IN_SERIES:
                value = row["InstanceNumber"]
            elif meta_type == PIXEL_DATA_OFFSET:
                value = str(template.pixel_offset + size - template.size)
            tables["Metadata"].append((instance_id, meta_type, value))
        file_uuid = str(uuid.uuid4())
        tables["AttachedFiles"].append((instance_id, FILE_TYPE_DICOM, file_uuid, size, size,
                                        template.compression, template.md5, template.md5))
        for kind, internal in chain:
            add(kind, internal, ids[kind - 1], parents[kind], row)
            for meta_type, value in template.metadata[kind]:
                tables["Metadata"].append((internal, meta_type, value))
        directory = os.path.join(data_dir, file_uuid[0:2], file_uuid[2:4])
        if directory not in made_dirs:
            os.makedirs(directory, exist_ok=True)
            made_dirs.add(directory)
        os.link(link_source(written), os.path.join(directory, file_uuid))
        written += 1
        if written % BATCH == 0:
            flush()
    flush()
    db.execute("PRAGMA journal_mode = WAL")
    db.close()
    if written != instances:
        raise RuntimeError(f"qr_load gave {written} instances, {instances} asked")
    return {"instances": written, "seconds": time.time() - started,
            "patients": len(known[PATIENT]), "studies": len(known[STUDY]),
            "series": len(known[SERIES]),
            "index_bytes": os.path.getsize(os.path.join(data_dir, "index"))}


# ----- validation: a direct index against a C-STORE one -----

# Metadata whose values are the time of loading or the order of arrival.
TIME_METADATA = {2, 7}


def canonical(index_path):
    """What an Orthanc index holds, keyed by public id instead of internal
    id, without what differs between two loads of the same data (reception
    times, attachment uuids and MD5s, sequence numbers)."""
    db = sqlite3.connect(f"file:{index_path}?mode=ro", uri=True)
    public = dict(db.execute("SELECT internalId, publicId FROM Resources"))
    out = {}
    out["Resources"] = sorted((kind, public[internal], public.get(parent))
                              for internal, kind, _, parent in
                              db.execute("SELECT * FROM Resources"))
    for table in ["MainDicomTags", "DicomIdentifiers"]:
        out[table] = sorted((public[internal], group, element, value) for internal, group,
                            element, value in db.execute(f"SELECT * FROM {table}"))
    out["Metadata"] = sorted((public[internal], kind, None if kind in TIME_METADATA else value)
                             for internal, kind, value in db.execute("SELECT * FROM Metadata"))
    out["AttachedFiles"] = sorted((public[row[0]], row[1], row[3], row[4], row[5])
                                  for row in db.execute("SELECT * FROM AttachedFiles"))
    out["GlobalIntegers"] = sorted(db.execute("SELECT * FROM GlobalIntegers"))
    out["GlobalProperties"] = sorted(db.execute("SELECT * FROM GlobalProperties"))
    out["PatientRecyclingOrder"] = [public[patient] for (patient,) in db.execute(
        "SELECT patientId FROM PatientRecyclingOrder ORDER BY seq")]
    # Stable* changes come 60 s after the last instance: only the New* ones.
    out["Changes"] = sorted((change, public[internal], kind) for change, internal, kind in
                            db.execute("SELECT changeType, internalId, resourceType FROM "
                                       "Changes WHERE changeType BETWEEN 2 AND 5"))
    db.close()
    return out


def compare_databases(stored_index, written_index):
    """Differences between two canonical indexes, as messages (none: equal)."""
    stored, written = canonical(stored_index), canonical(written_index)
    problems = []
    for table in stored:
        if stored[table] != written[table]:
            only_stored = [row for row in stored[table] if row not in written[table]][:3]
            only_written = [row for row in written[table] if row not in stored[table]][:3]
            problems.append(f"{table}: {len(stored[table])} rows by C-STORE, "
                            f"{len(written[table])} written; by C-STORE only {only_stored}, "
                            f"written only {only_written}")
    return problems
