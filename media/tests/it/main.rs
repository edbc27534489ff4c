//! Integration tests of sluice-media: File-sets against pydicom, DCMTK and
//! dicom3tools, bad DICOMDIRs, the writer's memory bound, and the
//! transcoder against dicom-object, pydicom and DCMTK's dcmconv.

mod bad;
mod export;
mod import;
mod scale;
mod support;
mod transcode;
mod writer;
