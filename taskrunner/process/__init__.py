"""Process control without Django: lines, process trees, supervised children."""
