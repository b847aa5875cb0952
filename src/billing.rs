//! Money, prices and bills. (Being built.)
