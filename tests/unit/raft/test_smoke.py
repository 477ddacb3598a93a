from petcd.raft import Role
from tests.unit.raft.harness import Cluster


def test_three_members_elect_and_replicate() -> None:
    c = Cluster([1, 2, 3])
    c.stabilize()
    c.elect(1)
    c.node(1).propose(b"x")
    c.stabilize()
    for i in (1, 2, 3):
        assert c[i].applied_data() == [b"x"]
    assert c[2].role is Role.FOLLOWER
