mod fs;
