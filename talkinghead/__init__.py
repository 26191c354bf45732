"""talkinghead: audio-driven talking-head generation suite."""
