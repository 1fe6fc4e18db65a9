//! sqlcommenter for Diesel (work in progress).
