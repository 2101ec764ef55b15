
-- {{comment}}
CREATE TABLE IF NOT EXISTS {{name}}
  USING DELTA LOCATION {{location}};
