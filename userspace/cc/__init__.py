"""Congestion control for lf_cc: the feature arithmetic in numpy, a flow simulator, the teachers,
offline training of the Aurora-sized network, and the slow-path adapter.

    features   lf_cc_model.h's integer functions, one for one (integer in, integer out)
    context    struct lf_cc_context as a numpy dtype
    sim        a seeded fluid simulator of flows sharing one bottleneck, per monitor interval
    teacher    the oracle (knows the link) and the online teacher (sees only a sample context)
    train      DAgger imitation of the oracle -> userspace/cc/model/
    adapter    the slow-path Adapter that keeps imitating the online teacher in the guest

Only numpy at import time; TensorFlow is imported by train and adapter where they need it.
"""
