"""Differential fixtures for net/tests/it/query/pydicom.rs, written by pydicom.

    identifiers DIR   writes C-FIND identifiers as bare data sets
                      (DIR/<name>.<implicit|explicit>) and prints, per line,
                      name TAB encoding TAB level TAB tag TAB value (UTF-8, hex)
                      for every key pydicom wrote, item keys as gggg,eeee/gggg,eeee.
    read DIR NAME...  reads response identifiers the Rust side wrote
                      (DIR/<name>.<implicit|explicit>) and prints, per element,
                      name TAB encoding TAB tag TAB value (UTF-8 after pydicom's
                      character-set decoding, hex).

A line format, not JSON: the Rust test has no JSON parser.
"""

import os
import sys

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset

ENCODINGS = {"implicit": True, "explicit": False}


def code(value, scheme):
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    return item


def fixtures():
    japanese = Dataset()
    japanese.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    japanese.QueryRetrieveLevel = "STUDY"
    japanese.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    japanese.PatientID = ""
    japanese.StudyDate = "20240101-20240131"
    japanese.StudyTime = ""
    japanese.StudyInstanceUID = ["1.2.840.1.1", "1.2.840.1.2"]
    japanese.ModalitiesInStudy = ["CT", "MR"]
    japanese.StudyDescription = "胸部*"
    japanese.ProcedureCodeSequence = [code("RPID16", "")]
    japanese.NumberOfStudyRelatedInstances = ""

    utf8 = Dataset()
    utf8.SpecificCharacterSet = "ISO_IR 192"
    utf8.QueryRetrieveLevel = "SERIES"
    utf8.StudyInstanceUID = "1.2.840.1.1"
    utf8.PatientName = "Wang^XiaoDong=王^小東"
    utf8.Modality = "CT"
    utf8.SeriesInstanceUID = ""
    utf8.SeriesDescription = "Thorax ü*"

    latin1 = Dataset()
    latin1.SpecificCharacterSet = "ISO_IR 100"
    latin1.QueryRetrieveLevel = "STUDY"
    latin1.PatientName = "Buc^Jérôme"
    latin1.ReferringPhysicianName = "Müller*"
    latin1.AccessionNumber = "A?C*"

    return {"japanese": japanese, "utf8": utf8, "latin1": latin1}


def hexed(text):
    return text.encode("utf-8").hex()


def keys(dataset, prefix=""):
    for element in dataset:
        tag = f"{element.tag.group:04X},{element.tag.element:04X}"
        if element.VR == "SQ":
            for item in element.value:
                yield from keys(item, prefix + tag + "/")
            continue
        if element.tag in (0x00080005, 0x00080052):
            continue
        value = element.value
        if value is None:
            value = ""
        elif isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            value = "\\".join(str(part) for part in value)
        else:
            value = str(value)
        yield prefix + tag, value


def write(directory):
    for name, dataset in fixtures().items():
        for encoding, implicit in ENCODINGS.items():
            fp = DicomBytesIO()
            fp.is_little_endian = True
            fp.is_implicit_VR = implicit
            write_dataset(fp, dataset)
            with open(os.path.join(directory, f"{name}.{encoding}"), "wb") as out:
                out.write(fp.getvalue())
            level = dataset.QueryRetrieveLevel
            for tag, value in keys(dataset):
                print(f"{name}\t{encoding}\t{level}\t{tag}\t{hexed(value)}")


def read(directory, names):
    for name in names:
        for encoding, implicit in ENCODINGS.items():
            with open(os.path.join(directory, f"{name}.{encoding}"), "rb") as fp:
                dataset = read_dataset(fp, implicit, True)
            dataset.decode()
            for tag, value in keys(dataset):
                print(f"{name}\t{encoding}\t{tag}\t{hexed(value)}")


if __name__ == "__main__":
    if sys.argv[1] == "identifiers":
        write(sys.argv[2])
    elif sys.argv[1] == "read":
        read(sys.argv[2], sys.argv[3:])
    else:
        sys.exit(f"unknown mode {sys.argv[1]}")
