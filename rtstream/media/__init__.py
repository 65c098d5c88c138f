"""Media sources: generated, file, device and DICOM cine inputs as async iterators."""
