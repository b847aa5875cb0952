//! Authorization with Cedar: policy loading, snapshots and decisions. (Being built.)
