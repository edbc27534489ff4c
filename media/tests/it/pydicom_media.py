"""pydicom's side of sluice-media's interop tests (run by tests/it/*.rs).

Subcommands:
  read DIR            load DIR/DICOMDIR with pydicom's FileSet; print one JSON
                      line per instance (and check each file loads)
  write OUT FILE...   write a File-set with pydicom's FileSet holding FILEs
  make OUT            write instances with non-ASCII patient names in
                      ISO_IR 100, ISO_IR 192 and ISO 2022 IR 87 (Explicit VR LE)
  compare A B         compare the data sets of two files element by element
                      (values; VRs of public elements); print differences
"""

import json
import os
import sys

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import FileSet
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT = "1.2.840.10008.5.1.4.1.1.2"


def read(directory):
    fs = FileSet(os.path.join(directory, "DICOMDIR"))
    for instance in fs:
        ds = instance.load()
        print(json.dumps({
            "patient_id": str(instance.PatientID),
            "patient_name": str(instance.PatientName) if "PatientName" in instance else "",
            "study_uid": str(instance.StudyInstanceUID),
            "series_uid": str(instance.SeriesInstanceUID),
            "sop_uid": str(instance.SOPInstanceUID),
            "record_type": str(instance.DirectoryRecordType),
            "path": os.path.relpath(instance.path, directory),
            "transfer_syntax": str(ds.file_meta.TransferSyntaxUID),
            "loaded_sop_uid": str(ds.SOPInstanceUID),
        }, ensure_ascii=False))


def write(out, files):
    fs = FileSet()
    for path in files:
        fs.add(pydicom.dcmread(path))
    fs.write(out)


NAMES = [
    ("ISO_IR 100", "Buc^J\u00e9r\u00f4me", "latin1"),
    ("ISO_IR 192", "Wang^XiaoDong=\u738b^\u5c0f\u6771", "utf8"),
    ("\\ISO 2022 IR 87", "Yamada^Tarou=\u5c71\u7530^\u592a\u90ce", "jis"),
]


def make(out):
    os.makedirs(out, exist_ok=True)
    for number, (charset, name, tag) in enumerate(NAMES, start=1):
        ds = Dataset()
        ds.SpecificCharacterSet = charset
        ds.SOPClassUID = CT
        ds.SOPInstanceUID = generate_uid()
        ds.PatientName = name
        ds.PatientID = f"PAT{number}"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.StudyInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        ds.StudyDate = "20240102"
        ds.StudyTime = "101010"
        ds.StudyID = f"S{number}"
        ds.AccessionNumber = f"A{number}"
        ds.StudyDescription = f"Study {tag}"
        ds.Modality = "CT"
        ds.SeriesNumber = "1"
        ds.InstanceNumber = "1"
        ds.Rows = 2
        ds.Columns = 2
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.PixelData = b"\x00\x01\x02\x03\x04\x05\x06\x07"
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        # Explicit VR: DCMTK's dcmmkdir takes nothing else under STD-GEN-CD.
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        ds.save_as(os.path.join(out, f"IM{number}"), enforce_file_format=True)


def words_le(value, big_endian):
    """OW values in little-endian byte order (a big-endian file's words swapped)."""
    if not big_endian:
        return value
    swapped = bytearray(value)
    swapped[0::2], swapped[1::2] = value[1::2], value[0::2]
    return bytes(swapped)


def flatten(ds, prefix="", big_endian=False):
    out = {}
    # Private values as stored: a private element's VR is lost in Implicit
    # VR, so its value is compared as bytes.
    raws = {tag: raw for tag, raw in ds._dict.items() if tag.is_private}
    for element in ds:
        if element.tag.element == 0 or element.tag == 0x00080001:
            continue
        key = prefix + str(element.tag)
        if element.VR == "SQ":
            out[key] = ("SQ", len(element.value))
            for index, item in enumerate(element.value):
                out.update(flatten(item, f"{key}[{index}].", big_endian))
        elif element.tag.is_private:
            raw = raws.get(element.tag)
            value = raw.value if raw is not None and isinstance(raw.value, bytes) else element.value
            if value is None:
                value = b""
            if isinstance(value, str):
                value = value.encode("latin-1", errors="replace")
            if isinstance(value, (bytes, bytearray)):
                value = bytes(value).rstrip(b" \0")
            out[key] = ("-", value if isinstance(value, bytes) else str(value))
        else:
            raw = ds.get_item(element.tag)
            value = raw.value if hasattr(raw, "value") else raw
            # Implicit VR leaves these to the reader's choice.
            vr = {"OB": "OB/OW", "OW": "OB/OW", "US": "US/SS", "SS": "US/SS"}.get(element.VR, element.VR)
            if isinstance(value, (bytes, bytearray)):
                value = bytes(value)
                if element.VR == "OW":
                    value = words_le(value, big_endian)
            else:
                value = str(element.value)
            out[key] = (vr, value)
    return out


def compare(a, b):
    left_ds = pydicom.dcmread(a)
    right_ds = pydicom.dcmread(b)
    left = flatten(left_ds, big_endian=not left_ds.original_encoding[1])
    right = flatten(right_ds, big_endian=not right_ds.original_encoding[1])
    differences = 0
    for key in sorted(set(left) | set(right)):
        if left.get(key) != right.get(key):
            differences += 1
            print(f"{key}: {left.get(key)!r} != {right.get(key)!r}"[:300])
    print(f"{len(left)} elements, {differences} differences")


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "read":
        read(sys.argv[2])
    elif command == "write":
        write(sys.argv[2], sys.argv[3:])
    elif command == "make":
        make(sys.argv[2])
    elif command == "compare":
        compare(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown command {command}")
